//! Batched reads: the KUB-1063 map merged into as few requests as the limits allow, without
//! breaking the unit's latching rules.
//!
//! Invariants of every plan (checked by the tests for every limit the configuration accepts):
//! - each polled register is read exactly once, each block at most `max_block` words long, and a
//!   block spans at most `max_gap` undocumented words at a time;
//! - a 4-word alarm or warning group is never split, so it is always read from its first word;
//! - blocks run in address order, so 0x0081 is read before or with 0x0082 and 0x00A2.

use alloc::vec::Vec;

use constella_kub1063::{Kind, REGISTERS, RegisterAddr, Table, latch_anchor};

/// One read request: `count` words of `table` from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub table: Table,
    pub start: RegisterAddr,
    pub count: u16,
}

impl Block {
    pub fn end(&self) -> u16 {
        self.start.0 + (self.count - 1)
    }

    #[cfg(test)]
    pub fn contains(&self, table: Table, addr: RegisterAddr) -> bool {
        self.table == table && (self.start.0..=self.end()).contains(&addr.0)
    }
}

/// The read plan for a full poll of a KUB-1063: every register but write-only commands, input
/// table first. `max_block` must be at least 4 (one alarm group); the configuration enforces it.
pub fn full_poll(max_block: u16, max_gap: u16) -> Vec<Block> {
    // Atoms are the units that must not be split: a whole group, or a single register.
    let mut atoms: Vec<(Table, u16, u16)> = Vec::new();
    for register in REGISTERS.iter().filter(|r| r.kind != Kind::Command) {
        let addr = register.addr.0;
        let joins_group = register.kind == Kind::GroupWord && latch_anchor(register.addr).is_some();
        match atoms.last_mut() {
            Some((table, _, end))
                if joins_group && *table == register.table && *end + 1 == addr =>
            {
                *end = addr
            }
            _ => atoms.push((register.table, addr, addr)),
        }
    }
    let mut blocks: Vec<Block> = Vec::new();
    for (table, start, end) in atoms {
        if let Some(block) = blocks
            .last_mut()
            .filter(|b| b.table == table && start > b.end())
        {
            let gap = start - block.end() - 1;
            let len = end - block.start.0 + 1;
            if gap <= max_gap && len <= max_block {
                block.count = len;
                continue;
            }
        }
        blocks.push(Block {
            table,
            start: RegisterAddr(start),
            count: end - start + 1,
        });
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_kub1063::LATCH_ANCHORS;

    fn show(blocks: &[Block]) -> String {
        blocks
            .iter()
            .map(|b| {
                format!(
                    "{}{:04X}+{}",
                    if b.table == Table::Input { "I" } else { "H" },
                    b.start.0,
                    b.count
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn default_plan_is_twelve_requests() {
        assert_eq!(
            show(&full_poll(20, 0)),
            "I0081+20 I0095+11 I00A2+1 I00C0+20 I00D4+3 I0301+1 H003F+1 H0100+20 H0114+20 H0128+20 H013C+2"
        );
    }

    #[test]
    fn gap_fill_merges_across_small_holes() {
        assert_eq!(show(&full_poll(20, 2)[..3]), "I0081+20 I0095+14 I00C0+20");
        assert_eq!(show(&full_poll(125, 20)[..2]), "I0081+34 I00C0+23");
        assert_eq!(
            show(&full_poll(125, 29)),
            "I0081+86 I0301+1 H003F+1 H0100+62"
        );
    }

    #[test]
    fn every_accepted_limit_keeps_the_invariants() {
        let polled: Vec<_> = REGISTERS
            .iter()
            .filter(|r| r.kind != Kind::Command)
            .collect();
        for max_block in 4..=125u16 {
            for max_gap in [0, 1, 2, 3, 10, 40] {
                let blocks = full_poll(max_block, max_gap.min(max_block - 1));
                for r in &polled {
                    let n = blocks
                        .iter()
                        .filter(|b| b.contains(r.table, r.addr))
                        .count();
                    assert_eq!(n, 1, "{} read {n} times at max_block {max_block}", r.key);
                }
                assert!(blocks.iter().all(|b| b.count >= 1 && b.count <= max_block));
                for (anchor, followers) in LATCH_ANCHORS {
                    let anchor_block = blocks
                        .iter()
                        .position(|b| b.contains(Table::Input, *anchor));
                    for follower in followers.iter() {
                        let block = blocks
                            .iter()
                            .position(|b| b.contains(Table::Input, *follower));
                        assert!(
                            anchor_block <= block,
                            "{follower} read before its anchor {anchor}"
                        );
                    }
                }
                for base in [0x00C0, 0x00C4, 0x00C8, 0x00CC] {
                    let b = blocks
                        .iter()
                        .find(|b| b.contains(Table::Input, RegisterAddr(base)))
                        .expect("group");
                    assert!(
                        b.end() >= base + 3,
                        "group {base:#X} split at max_block {max_block}"
                    );
                }
            }
        }
    }
}

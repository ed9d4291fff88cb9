//! A unit's register image: the last raw word read at each mapped address, and its decoding.

use alloc::vec::Vec;

use super::decode::{Reading, decode};
use super::flags::{Group, OUTPUT_BITS, OutputBit};
use super::map::{REGISTERS, Register, RegisterAddr, Table, register};

/// Raw words of one unit, one slot per register of [`REGISTERS`]; `None` where nothing was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    words: Vec<Option<u16>>,
}

impl Default for Image {
    fn default() -> Self {
        Image {
            words: alloc::vec![None; REGISTERS.len()],
        }
    }
}

/// One decoded field of an image.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The register.
    pub register: &'static Register,
    /// The raw word as read.
    pub raw: u16,
    /// Its decoding.
    pub reading: Reading,
}

/// A 64-bit group and its mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// Which group.
    pub group: Group,
    /// The combined mask (bit n = catalogue bit n).
    pub mask: u64,
}

/// Everything decoded from an image.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Every register that has a word, in map order.
    pub fields: Vec<Field>,
    /// Every group whose four words are all present.
    pub groups: Vec<GroupState>,
    /// Digital outputs that are closed (on), from bitfields that are present.
    pub outputs_on: Vec<&'static OutputBit>,
}

impl Image {
    /// Stores `raw` at `addr`; returns false (and stores nothing) if the map has no such register.
    pub fn set(&mut self, table: Table, addr: RegisterAddr, raw: u16) -> bool {
        match index(table, addr) {
            Some(i) => {
                self.words[i] = Some(raw);
                true
            }
            None => false,
        }
    }

    /// The raw word at `addr`, if read.
    pub fn get(&self, table: Table, addr: RegisterAddr) -> Option<u16> {
        index(table, addr).and_then(|i| self.words[i])
    }

    /// Number of registers with a word.
    pub fn len(&self) -> usize {
        self.words.iter().filter(|w| w.is_some()).count()
    }

    /// True when nothing has been read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 64-bit mask of `group`, if all four words are present.
    pub fn group_mask(&self, group: Group) -> Option<u64> {
        let base = group.base().0;
        let mut words = [0u16; 4];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.get(Table::Input, RegisterAddr(base + i as u16))?;
        }
        Some(Group::mask(words))
    }

    /// Decodes every present word.
    pub fn decode(&self) -> Decoded {
        let fields = REGISTERS
            .iter()
            .zip(&self.words)
            .filter_map(|(register, word)| {
                word.map(|raw| Field {
                    register,
                    raw,
                    reading: decode(register, raw),
                })
            })
            .collect();
        let groups = Group::ALL
            .iter()
            .filter_map(|&group| {
                self.group_mask(group)
                    .map(|mask| GroupState { group, mask })
            })
            .collect();
        let outputs_on = OUTPUT_BITS
            .iter()
            .filter(|bit| {
                self.get(Table::Input, bit.register)
                    .is_some_and(|word| word & (1 << bit.bit) != 0)
            })
            .collect();
        Decoded {
            fields,
            groups,
            outputs_on,
        }
    }
}

fn index(table: Table, addr: RegisterAddr) -> Option<usize> {
    register(table, addr)?;
    REGISTERS
        .binary_search_by(|r| (r.table, r.addr).cmp(&(table, addr)))
        .ok()
}

//! Modbus PDUs of the functions the KUB-1063 serves (FC03, FC04, FC06), and their two framings:
//! RTU (address + PDU + CRC-16) and Modbus TCP (MBAP header + PDU).
//!
//! The simulator frames bytes with this module instead of using tokio-modbus's server because
//! fault injection has to emit what a correct server never would: corrupted CRCs, silence, odd
//! exceptions. Every parser here is length-checked and returns `None` on malformed input; nothing
//! panics.

use alloc::vec;
use alloc::vec::Vec;

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
pub const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// A Modbus exception code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception(pub u8);

impl Exception {
    pub const ILLEGAL_FUNCTION: Exception = Exception(0x01);
    pub const ILLEGAL_DATA_ADDRESS: Exception = Exception(0x02);
    pub const ILLEGAL_DATA_VALUE: Exception = Exception(0x03);
    pub const GATEWAY_TARGET_FAILED: Exception = Exception(0x0B);
}

/// A request the simulator understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    ReadHolding { start: u16, count: u16 },
    ReadInput { start: u16, count: u16 },
    WriteSingle { addr: u16, value: u16 },
    Unsupported { function: u8 },
}

impl Request {
    /// Parses a request PDU (function code first).
    pub fn parse(pdu: &[u8]) -> Option<Request> {
        let (&function, body) = pdu.split_first()?;
        let pair = |body: &[u8]| -> Option<(u16, u16)> {
            match body {
                [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
                _ => None,
            }
        };
        Some(match function {
            0x03 => pair(body).map(|(start, count)| Request::ReadHolding { start, count })?,
            0x04 => pair(body).map(|(start, count)| Request::ReadInput { start, count })?,
            0x06 => pair(body).map(|(addr, value)| Request::WriteSingle { addr, value })?,
            function => Request::Unsupported { function },
        })
    }

    pub fn function(&self) -> u8 {
        match self {
            Request::ReadHolding { .. } => 0x03,
            Request::ReadInput { .. } => 0x04,
            Request::WriteSingle { .. } => 0x06,
            Request::Unsupported { function } => *function,
        }
    }
}

/// A reply PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// FC03/FC04 data.
    Registers(u8, Vec<u16>),
    /// FC06 echo of address and value.
    Echo(u16, u16),
    /// Exception for the given function code.
    Exception(u8, Exception),
}

impl Reply {
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Registers(function, words) => {
                out.push(*function);
                // At most 125 words are ever served, so the byte count fits in a u8.
                out.push((words.len() * 2) as u8);
                for word in words {
                    out.extend_from_slice(&word.to_be_bytes());
                }
            }
            Reply::Echo(addr, value) => {
                out.push(0x06);
                out.extend_from_slice(&addr.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Reply::Exception(function, code) => {
                out.push(function | 0x80);
                out.push(code.0);
            }
        }
    }
}

/// Length of a complete RTU request frame starting at `buf[0]`, if the function code fixes it
/// and enough bytes are present to tell. Unknown function codes are delimited by line silence.
pub fn rtu_request_len(buf: &[u8]) -> Option<usize> {
    match buf.get(1)? {
        0x01..=0x06 => Some(8),
        0x0F | 0x10 => buf.get(6).map(|n| 9 + usize::from(*n)),
        _ => None,
    }
}

/// Splits an RTU frame into (unit, PDU) if its CRC is right.
pub fn rtu_open(frame: &[u8]) -> Option<(u8, &[u8])> {
    if frame.len() < 4 {
        return None;
    }
    let (body, crc) = frame.split_at(frame.len() - 2);
    if CRC.checksum(body).to_le_bytes() != [crc[0], crc[1]] {
        return None;
    }
    Some((body[0], &body[1..]))
}

/// Whether a sealed RTU frame carries its true CRC; a simulator's fault sends a wrong one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The CRC-16 of the frame.
    Valid,
    /// A CRC that does not match, as a line fault produces.
    Corrupted,
}

/// Frames a reply for RTU.
pub fn rtu_seal(unit: u8, reply: &Reply, checksum: Checksum) -> Vec<u8> {
    let mut out = vec![unit];
    reply.emit(&mut out);
    let mut crc = CRC.checksum(&out);
    if checksum == Checksum::Corrupted {
        crc ^= 0xA5A5;
    }
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A parsed MBAP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mbap {
    pub transaction: u16,
    pub unit: u8,
    /// Length of the PDU that follows the 7-byte header.
    pub pdu_len: usize,
}

impl Mbap {
    pub const LEN: usize = 7;

    /// Parses a header; rejects a non-Modbus protocol id and PDU lengths outside 1..=253.
    pub fn parse(header: &[u8; 7]) -> Option<Mbap> {
        let protocol = u16::from_be_bytes([header[2], header[3]]);
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if protocol != 0 || !(2..=254).contains(&len) {
            return None;
        }
        Some(Mbap {
            transaction: u16::from_be_bytes([header[0], header[1]]),
            unit: header[6],
            pdu_len: len - 1,
        })
    }

    pub fn seal(&self, reply: &Reply) -> Vec<u8> {
        let mut pdu = Vec::with_capacity(256);
        reply.emit(&mut pdu);
        let mut out = Vec::with_capacity(Mbap::LEN + pdu.len());
        out.extend_from_slice(&self.transaction.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        // PDU ≤ 253 bytes, so unit + PDU fits in a u16.
        out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
        out.push(self.unit);
        out.extend_from_slice(&pdu);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtu_round_trip_with_a_known_crc() {
        // Read 1 input register at 0x0301 from unit 1: CRC from the Modbus spec's algorithm.
        let frame = [0x01, 0x04, 0x03, 0x01, 0x00, 0x01, 0x60, 0x4E];
        assert_eq!(rtu_request_len(&frame), Some(8));
        let (unit, pdu) = rtu_open(&frame).expect("valid frame");
        assert_eq!(unit, 1);
        assert_eq!(
            Request::parse(pdu),
            Some(Request::ReadInput {
                start: 0x0301,
                count: 1
            })
        );
        let reply = rtu_seal(1, &Reply::Registers(4, vec![414]), Checksum::Valid);
        assert_eq!(
            rtu_open(&reply).map(|(u, p)| (u, p.to_vec())),
            Some((1, vec![4, 2, 0x01, 0x9E]))
        );
        assert_eq!(
            rtu_open(&rtu_seal(
                1,
                &Reply::Registers(4, vec![414]),
                Checksum::Corrupted
            )),
            None
        );
    }

    #[test]
    fn malformed_input_is_rejected_without_panic() {
        for bad in [&[][..], &[1], &[1, 4, 0], &[1, 4, 0, 0, 0, 0, 0, 0]] {
            assert!(rtu_open(bad).is_none());
        }
        assert_eq!(Request::parse(&[]), None);
        assert_eq!(Request::parse(&[0x04, 0x00]), None);
        assert_eq!(
            Request::parse(&[0x2B, 1, 2]),
            Some(Request::Unsupported { function: 0x2B })
        );
        assert_eq!(
            Mbap::parse(&[0, 1, 0, 1, 0, 6, 1]),
            None,
            "protocol id must be 0"
        );
        assert_eq!(Mbap::parse(&[0, 1, 0, 0, 1, 0, 1]), None, "length over 254");
        assert_eq!(
            Mbap::parse(&[0, 1, 0, 0, 0, 1, 1]),
            None,
            "no function code"
        );
    }

    #[test]
    fn mbap_echoes_transaction_and_unit() {
        let header = Mbap::parse(&[0x12, 0x34, 0, 0, 0, 6, 3]).expect("header");
        assert_eq!(header.pdu_len, 5);
        let out = header.seal(&Reply::Exception(4, Exception::ILLEGAL_DATA_ADDRESS));
        assert_eq!(out, [0x12, 0x34, 0, 0, 0, 3, 3, 0x84, 0x02]);
    }
}

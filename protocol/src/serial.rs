//! The serial link protocol, version 1 (UART / RS-485 / radio dongles). Specified in `SPEC.md`;
//! the hex test vectors in `vectors/serial-v1.json` are checked by this crate's tests.
//!
//! ```text
//! wire:    COBS(frame) 0x00
//! frame:   version:u8=1  type:u8  id_len:u8  id:[u8; id_len]  seq:u32le  body  crc:u16le
//! crc:     CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, no reflection, xorout 0) over all
//!          preceding frame bytes
//! ```
//!
//! Decoding needs no allocator: [`decode`] works in place on the received bytes and returns a
//! [`Frame`] that borrows from them. Nothing here panics on any input.

use crc::{Crc, CRC_16_IBM_3740};

/// The CRC of every frame.
pub const CRC: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);
/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Largest decoded frame (header + body + CRC), bytes.
pub const MAX_FRAME: usize = 96;
/// Largest encoded frame on the wire, including the 0x00 delimiter.
pub const MAX_WIRE: usize = cobs::max_encoding_length(MAX_FRAME) + 1;
/// Longest device id.
pub const MAX_ID: usize = 16;
/// Longest masked name on a reader display, bytes of UTF-8.
pub const MAX_NAME: usize = 24;

/// Message type codes.
pub mod kind {
    /// Alarm button event.
    pub const ALARM: u8 = 0x01;
    /// Heartbeat with battery.
    pub const HEARTBEAT: u8 = 0x02;
    /// Card tap at a reader.
    pub const CARD_TAP: u8 = 0x03;
    /// Health kiosk reading.
    pub const HEALTH: u8 = 0x04;
    /// Gateway → device: committed.
    pub const ACK: u8 = 0x10;
    /// Gateway → device: cannot accept.
    pub const NAK: u8 = 0x11;
    /// Gateway → reader: what to show.
    pub const DISPLAY: u8 = 0x12;
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// 1 press (SOS), 2 cancel (long press), 3 check-in (double press).
    Alarm {
        /// Action code.
        action: u8,
    },
    /// Battery voltage (mV) and charge (%; 255 = unknown).
    Heartbeat {
        /// Millivolts.
        battery_mv: u16,
        /// Percent, 255 unknown.
        battery_pct: u8,
    },
    /// A card was tapped: its UID (4–10 bytes), if the reader computes one a MAC (0–8 bytes),
    /// and the price entered at the counter (fen) if any.
    CardTap {
        /// Card UID.
        uid: &'a [u8],
        /// Card MAC, empty if none.
        mac: &'a [u8],
        /// Price typed at the counter, fen; None = the meal period's menu price. On the wire an
        /// optional trailing `i32` (SPEC.md §4).
        price: Option<i32>,
    },
    /// A health reading in the unit's natural integer (see SPEC.md): kind 1 blood pressure
    /// (value1 systolic, value2 diastolic, mmHg), 2 glucose (0.1 mmol/L), 3 SpO2 (%),
    /// 4 temperature (0.1 °C), 5 weight (0.1 kg), 6 pulse (bpm).
    Health {
        /// Reading kind.
        reading: u8,
        /// First value.
        value1: i32,
        /// Second value (0 when unused).
        value2: i32,
    },
    /// The frame with this `seq` is committed.
    Ack,
    /// The frame with this `seq` cannot be accepted: 1 unparseable, 2 unknown device,
    /// 3 unsupported version, 4 unsupported type.
    Nak {
        /// Reason code.
        reason: u8,
    },
    /// What a card reader shows: result 0 ok, 1 unknown card, 2 lost card, 3 outside meal period,
    /// 4 insufficient balance, 5 no price (the period has no menu price and the reader sent
    /// none); amounts in fen.
    Display {
        /// Result code.
        result: u8,
        /// Masked name, UTF-8.
        name: &'a str,
        /// Price, fen.
        price: i32,
        /// Subsidy, fen.
        subsidy: i32,
        /// Payable, fen.
        payable: i32,
        /// Balance after, fen.
        balance: i32,
    },
}

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Device id (ASCII `[A-Za-z0-9_.-]`, 1–16 bytes).
    pub device: &'a str,
    /// The device's sequence number (reused on retransmission).
    pub seq: u32,
    /// The message.
    pub body: Body<'a>,
}

/// Why bytes were not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// COBS structure broken (noise).
    Cobs,
    /// Shorter than a header and CRC.
    TooShort,
    /// Longer than [`MAX_FRAME`].
    TooLong,
    /// CRC mismatch: DC-09 says no reply; the sender retransmits.
    Crc,
    /// Version is not 1 (NAK 3).
    Version(u8),
    /// Unknown type code (NAK 4).
    UnknownType(u8),
    /// Fields do not fit the type's layout, or the id is not a valid id (NAK 1).
    Malformed,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// Id empty, too long or with characters outside `[A-Za-z0-9_.-]`.
    BadId,
    /// A field is longer than the layout allows.
    FieldTooLong,
    /// The output buffer is too small.
    BufferTooSmall,
}

fn id_ok(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_' || *b == b'.')
}

/// Reads fields from a frame without panicking.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Malformed)?;
        let s = self.buf.get(self.at..end).ok_or(DecodeError::Malformed)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    fn short(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()? as usize;
        if n > max {
            return Err(DecodeError::Malformed);
        }
        self.take(n)
    }
}

/// Decodes one COBS-encoded frame (without its 0x00 delimiter) in place.
pub fn decode(wire: &mut [u8]) -> Result<Frame<'_>, DecodeError> {
    if wire.len() > MAX_WIRE {
        return Err(DecodeError::TooLong);
    }
    // 0x00 only ends a frame (SPEC.md §2). `cobs::decode_in_place` stops at the first one and
    // ignores what follows, which would accept a frame with a delimiter and trailing bytes.
    if wire.contains(&0) {
        return Err(DecodeError::Cobs);
    }
    let n = cobs::decode_in_place(wire).map_err(|_| DecodeError::Cobs)?;
    let frame: &[u8] = wire.get(..n).ok_or(DecodeError::Cobs)?;
    if frame.len() < 3 + 1 + 4 + 2 {
        return Err(DecodeError::TooShort);
    }
    if frame.len() > MAX_FRAME {
        return Err(DecodeError::TooLong);
    }
    let (content, crc) = frame.split_at(frame.len() - 2);
    if CRC.checksum(content) != u16::from_le_bytes([crc[0], crc[1]]) {
        return Err(DecodeError::Crc);
    }
    let mut c = Cursor {
        buf: content,
        at: 0,
    };
    let version = c.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = c.u8()?;
    let id = c.short(MAX_ID)?;
    if !id_ok(id) {
        return Err(DecodeError::Malformed);
    }
    let device = core::str::from_utf8(id).map_err(|_| DecodeError::Malformed)?;
    let seq = c.u32()?;
    let body = match kind {
        kind::ALARM => Body::Alarm { action: c.u8()? },
        kind::HEARTBEAT => Body::Heartbeat {
            battery_mv: c.u16()?,
            battery_pct: c.u8()?,
        },
        kind::CARD_TAP => {
            let uid = c.short(10)?;
            if uid.len() < 4 {
                return Err(DecodeError::Malformed);
            }
            let mac = c.short(8)?;
            // The optional price is the only thing that may follow the MAC.
            let price = if content.len().saturating_sub(c.at) == 4 {
                Some(c.i32()?)
            } else {
                None
            };
            Body::CardTap { uid, mac, price }
        }
        kind::HEALTH => Body::Health {
            reading: c.u8()?,
            value1: c.i32()?,
            value2: c.i32()?,
        },
        kind::ACK => Body::Ack,
        kind::NAK => Body::Nak { reason: c.u8()? },
        kind::DISPLAY => {
            let result = c.u8()?;
            let name =
                core::str::from_utf8(c.short(MAX_NAME)?).map_err(|_| DecodeError::Malformed)?;
            Body::Display {
                result,
                name,
                price: c.i32()?,
                subsidy: c.i32()?,
                payable: c.i32()?,
                balance: c.i32()?,
            }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    if c.at != content.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(Frame { device, seq, body })
}

/// Writes fields into a buffer without panicking.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.at + bytes.len();
        self.buf
            .get_mut(self.at..end)
            .ok_or(EncodeError::FieldTooLong)?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }
    fn short(&mut self, bytes: &[u8], max: usize) -> Result<(), EncodeError> {
        if bytes.len() > max {
            return Err(EncodeError::FieldTooLong);
        }
        self.put(&[bytes.len() as u8])?;
        self.put(bytes)
    }
}

/// Encodes a frame for the wire: COBS and the trailing 0x00. Returns the bytes written.
pub fn encode(frame: &Frame<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    if !id_ok(frame.device.as_bytes()) {
        return Err(EncodeError::BadId);
    }
    let mut raw = [0u8; MAX_FRAME];
    let mut w = Writer {
        buf: &mut raw,
        at: 0,
    };
    let kind = match frame.body {
        Body::Alarm { .. } => kind::ALARM,
        Body::Heartbeat { .. } => kind::HEARTBEAT,
        Body::CardTap { .. } => kind::CARD_TAP,
        Body::Health { .. } => kind::HEALTH,
        Body::Ack => kind::ACK,
        Body::Nak { .. } => kind::NAK,
        Body::Display { .. } => kind::DISPLAY,
    };
    w.put(&[VERSION, kind])?;
    w.short(frame.device.as_bytes(), MAX_ID)?;
    w.put(&frame.seq.to_le_bytes())?;
    match frame.body {
        Body::Alarm { action } => w.put(&[action])?,
        Body::Heartbeat {
            battery_mv,
            battery_pct,
        } => {
            w.put(&battery_mv.to_le_bytes())?;
            w.put(&[battery_pct])?;
        }
        Body::CardTap { uid, mac, price } => {
            if uid.len() < 4 {
                return Err(EncodeError::FieldTooLong);
            }
            w.short(uid, 10)?;
            w.short(mac, 8)?;
            if let Some(p) = price {
                w.put(&p.to_le_bytes())?;
            }
        }
        Body::Health {
            reading,
            value1,
            value2,
        } => {
            w.put(&[reading])?;
            w.put(&value1.to_le_bytes())?;
            w.put(&value2.to_le_bytes())?;
        }
        Body::Ack => {}
        Body::Nak { reason } => w.put(&[reason])?,
        Body::Display {
            result,
            name,
            price,
            subsidy,
            payable,
            balance,
        } => {
            w.put(&[result])?;
            w.short(name.as_bytes(), MAX_NAME)?;
            for v in [price, subsidy, payable, balance] {
                w.put(&v.to_le_bytes())?;
            }
        }
    }
    let crc = CRC.checksum(&w.buf[..w.at]);
    w.put(&crc.to_le_bytes())?;
    let len = w.at;
    let n = cobs::try_encode(&raw[..len], out).map_err(|_| EncodeError::BufferTooSmall)?;
    *out.get_mut(n).ok_or(EncodeError::BufferTooSmall)? = 0;
    Ok(n + 1)
}

/// Splits a byte stream into frames at 0x00 delimiters, resynchronizing after noise: a frame
/// longer than [`MAX_WIRE`] is dropped up to the next delimiter.
pub struct FrameReader {
    buf: [u8; MAX_WIRE],
    len: usize,
    overflowed: bool,
}

/// What [`FrameReader::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    /// Need more bytes.
    Pending,
    /// A complete (still COBS-encoded) frame; pass it to [`decode`].
    Frame(&'a mut [u8]),
    /// Bytes were discarded up to this delimiter (too long: noise or a lost delimiter).
    Resync,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// An empty reader.
    pub const fn new() -> Self {
        FrameReader {
            buf: [0; MAX_WIRE],
            len: 0,
            overflowed: false,
        }
    }

    /// Feeds one byte.
    pub fn push(&mut self, byte: u8) -> Push<'_> {
        if byte == 0 {
            let len = core::mem::replace(&mut self.len, 0);
            if core::mem::replace(&mut self.overflowed, false) {
                return Push::Resync;
            }
            if len == 0 {
                return Push::Pending; // back-to-back delimiters: idle line
            }
            return Push::Frame(&mut self.buf[..len]);
        }
        if self.len < self.buf.len() {
            self.buf[self.len] = byte;
            self.len += 1;
        } else {
            self.overflowed = true;
        }
        Push::Pending
    }
}

#[cfg(test)]
mod tests;

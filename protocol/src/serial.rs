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
//! Reading (no allocator: everything works in place on the received bytes and borrows from them;
//! nothing here panics on any input):
//!
//! - [`FrameReader`] cuts a byte stream at 0x00 delimiters and resynchronizes after noise.
//! - [`decode`] reads one frame in either direction. Devices use it for the gateway's ACK, NAK
//!   (including the anonymous NAK, whose `device` is empty) and DISPLAY.
//! - The gateway refuses a device frame in the order of SPEC.md §6.2, the first failing check
//!   giving the NAK reason: [`decode_header`] (noise → no reply; version → NAK 3; header → NAK 1,
//!   anonymous), then the gateway's registry (unknown device → 2), then the type
//!   ([`Header::message_type`], [`MessageType::from_device`]; not taken → 4), then
//!   [`Header::body`] (NAK 1), then its own kind and conflict checks (5, 6). Every refusal is a
//!   [`Refusal`] whose [`Refusal::nak`] is the frame to send. [`check`] runs the codec's checks
//!   of that order without a registry (tests, tools, the vectors).
//!
//! Writing: [`encode`] checks layout (id, lengths) but not values, so tests can build frames the
//! gateway refuses; [`Frame::nak`] builds a NAK; [`fit_name`], [`clamp_fen`] and [`CardId`] are
//! the value rules of SPEC.md §6.4–§6.5.

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

mod codes;
mod decode;

pub use codes::{
    clamp_fen, fit_name, CardId, DisplayResult, MessageType, NakReason, ReadingResultCode, MAX_UID,
};
pub use decode::{check, decode, decode_header, Header, Refusal, Rejected};

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
    /// Gateway → health kiosk: what became of a reading or a card tap (SPEC.md §6.7).
    pub const READING_RESULT: u8 = 0x13;
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// 1 press (SOS), 2 cancel (long press), 3 check-in (double press); other values do not
    /// decode.
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
    /// A health reading in the unit's natural integer (see SPEC.md; readings outside 1–6 do not
    /// decode): kind 1 blood pressure
    /// (value1 systolic, value2 diastolic, mmHg), 2 glucose (0.1 mmol/L), 3 SpO2 (%),
    /// 4 temperature (0.1 °C), 5 weight (0.1 kg), 6 pulse (bpm).
    Health {
        /// Reading kind.
        reading: u8,
        /// First value.
        value1: i32,
        /// Second value (0 when unused).
        value2: i32,
        /// Optional trailing `context:u8` (SPEC.md §4): glucose 1 fasting, 2 after a meal,
        /// 3 random; blood pressure 1 sitting, 2 standing, 3 lying; 0 or absent (None) = not given.
        context: Option<u8>,
    },
    /// The frame with this `seq` is committed.
    Ack,
    /// The frame with this `seq` cannot be accepted; see [`NakReason`]. Any byte decodes, so a
    /// device reads a reason newer than its firmware (and does not retransmit).
    Nak {
        /// Reason code ([`NakReason::code`]).
        reason: u8,
    },
    /// What a card reader shows; see [`DisplayResult`] and SPEC.md §6.4 for which amounts each
    /// result carries. Any result byte decodes (a reader shows an unknown one as "refused").
    Display {
        /// Result code ([`DisplayResult::code`]).
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
    /// What a health kiosk shows after a reading or a card tap ([`ReadingResultCode`], SPEC.md
    /// §6.7). Any result byte decodes (a kiosk shows an unknown one as "please see the staff").
    ReadingResult {
        /// Result code.
        result: u8,
        /// The resident's masked name, UTF-8, empty when none.
        name: &'a str,
    },
}

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Device id (ASCII `[A-Za-z0-9_.-]`, 1–16 bytes); empty only in an anonymous NAK.
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
    /// Fields do not fit the type's layout or ranges, or the id is not a valid id (NAK 1).
    Malformed,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// Id too long, with characters outside `[A-Za-z0-9_.-]`, or empty in anything but a NAK.
    BadId,
    /// A field is longer than the layout allows.
    FieldTooLong,
    /// The output buffer is too small.
    BufferTooSmall,
}

fn id_chars_ok(id: &[u8]) -> bool {
    id.iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_' || *b == b'.')
}

impl Body<'_> {
    /// The message type this body is sent as.
    pub fn message_type(&self) -> MessageType {
        match self {
            Body::Alarm { .. } => MessageType::Alarm,
            Body::Heartbeat { .. } => MessageType::Heartbeat,
            Body::CardTap { .. } => MessageType::CardTap,
            Body::Health { .. } => MessageType::Health,
            Body::Ack => MessageType::Ack,
            Body::Nak { .. } => MessageType::Nak,
            Body::Display { .. } => MessageType::Display,
            Body::ReadingResult { .. } => MessageType::ReadingResult,
        }
    }
}

impl<'a> Frame<'a> {
    /// A NAK of `device`'s frame `seq`; `device` empty makes the anonymous NAK (SPEC.md §6.3).
    pub fn nak(device: &'a str, seq: u32, reason: NakReason) -> Self {
        Frame {
            device,
            seq,
            body: Body::Nak {
                reason: reason.code(),
            },
        }
    }
}

/// Writes fields into a buffer without panicking.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .at
            .checked_add(bytes.len())
            .ok_or(EncodeError::FieldTooLong)?;
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
        let len = u8::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.put(&[len])?;
        self.put(bytes)
    }
}

/// Encodes a frame for the wire: COBS and the trailing 0x00. Returns the bytes written.
pub fn encode(frame: &Frame<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    let id = frame.device.as_bytes();
    // Only a NAK may go to nobody in particular (SPEC.md §6.3).
    let anonymous_nak = id.is_empty() && matches!(frame.body, Body::Nak { .. });
    if (id.is_empty() && !anonymous_nak) || id.len() > MAX_ID || !id_chars_ok(id) {
        return Err(EncodeError::BadId);
    }
    let mut raw = [0u8; MAX_FRAME];
    let mut w = Writer {
        buf: &mut raw,
        at: 0,
    };
    w.put(&[VERSION, frame.body.message_type().code()])?;
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
            w.short(uid, MAX_UID)?;
            w.short(mac, 8)?;
            if let Some(p) = price {
                w.put(&p.to_le_bytes())?;
            }
        }
        Body::Health {
            reading,
            value1,
            value2,
            context,
        } => {
            w.put(&[reading])?;
            w.put(&value1.to_le_bytes())?;
            w.put(&value2.to_le_bytes())?;
            if let Some(c) = context {
                w.put(&[c])?;
            }
        }
        Body::ReadingResult { result, name } => {
            w.put(&[result])?;
            w.short(name.as_bytes(), MAX_NAME)?;
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

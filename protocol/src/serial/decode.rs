//! Reading received frames, in the order SPEC.md §6.2 gives: noise checks (COBS, length, CRC:
//! no reply), then version, header, type, body. [`decode`] reads any frame in either direction;
//! [`decode_header`] + [`Header::body`] are the gateway's two steps, between which it checks its
//! registry; [`check`] is the codec's part of that order without a registry.

use super::codes::{MessageType, NakReason};
use super::{kind, Body, DecodeError, Frame, MAX_FRAME, MAX_ID, MAX_NAME, MAX_UID, MAX_WIRE};

/// Smallest frame that can be one: version, type, id_len, a 1-byte id, seq, CRC.
const MIN_FRAME: usize = 3 + 1 + 4 + 2;

const SHORT: &str = "the body is shorter than its type's layout (SPEC.md §4)";
const TRAILING: &str = "bytes follow the body (SPEC.md §3)";
const NOT_V1: &str = "the version byte is not 1; this gateway speaks version 1";
const BAD_ID_LEN: &str = "id_len is 0 or above 16";
const BAD_ID_CHAR: &str = "the device id has a byte outside A-Z a-z 0-9 - _ .";
const SHORT_HEADER: &str = "the frame ends inside its header (id or seq)";
const UNKNOWN_TYPE: &str = "the type byte is not one SPEC.md §4 defines";
const TO_DEVICE_TYPE: &str =
    "a gateway-to-device type (ACK, NAK, DISPLAY, READING_RESULT) sent by a device";

/// A frame the gateway refuses with a NAK: to whom, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// The NAK's reason.
    pub reason: NakReason,
    /// The device the NAK is addressed to; None when the id could not be read (an anonymous NAK,
    /// SPEC.md §6.3).
    pub device: Option<&'a str>,
    /// The refused frame's seq; 0 when it could not be read.
    pub seq: u32,
    /// What was wrong, for the log line and the dead letter (never contains frame content).
    pub detail: &'static str,
}

impl<'a> Refusal<'a> {
    /// The NAK to send (pass it to [`super::encode`]).
    pub fn nak(&self) -> Frame<'a> {
        Frame::nak(self.device.unwrap_or(""), self.seq, self.reason)
    }
}

/// Why received bytes are not a frame the gateway takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected<'a> {
    /// COBS broken, too short, too long or a bad CRC ([`DecodeError::Cobs`], `TooShort`,
    /// `TooLong`, `Crc`): no reply (SPEC.md §6.2), only counted.
    Noise(DecodeError),
    /// Good CRC, refused: answer with `refusal.nak()`.
    Refused(Refusal<'a>),
}

/// The header of a device frame whose CRC, version and header are good (SPEC.md §3); the body
/// is parsed on demand by [`Header::body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Device id, 1–16 bytes of `[A-Za-z0-9_.-]`.
    pub device: &'a str,
    /// The device's seq.
    pub seq: u32,
    /// The type byte, as received (see [`Header::message_type`]).
    pub kind: u8,
    body: &'a [u8],
}

impl<'a> Header<'a> {
    /// The message type; None for a type byte SPEC.md §4 does not define.
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_code(self.kind)
    }

    /// Parses the body. A refusal is addressed to this header's device and seq: NAK 4 for an
    /// unknown type, NAK 1 for a body that does not fit its type (SPEC.md §4).
    pub fn body(&self) -> Result<Body<'a>, Refusal<'a>> {
        parse_body(self.kind, self.body).map_err(|(error, detail)| {
            let reason = match error {
                DecodeError::UnknownType(_) => NakReason::UnsupportedType,
                _ => NakReason::Unparseable,
            };
            self.refusal(reason, detail)
        })
    }

    /// A refusal of this frame (for the gateway's own checks: unknown device, wrong kind, ...).
    pub fn refusal(&self, reason: NakReason, detail: &'static str) -> Refusal<'a> {
        Refusal {
            reason,
            device: Some(self.device),
            seq: self.seq,
            detail,
        }
    }
}

/// Reads fields from a frame without panicking; every failure is "too short".
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.buf.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_le_bytes(self.array()?))
    }
    fn rest(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }
}

/// Undoes COBS in place and checks length and CRC; returns the frame without its CRC.
fn content(wire: &mut [u8]) -> Result<&[u8], DecodeError> {
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
    if frame.len() < MIN_FRAME {
        return Err(DecodeError::TooShort);
    }
    if frame.len() > MAX_FRAME {
        return Err(DecodeError::TooLong);
    }
    let (content, crc) = frame.split_at(frame.len() - 2);
    if super::CRC.checksum(content) != u16::from_le_bytes([crc[0], crc[1]]) {
        return Err(DecodeError::Crc);
    }
    Ok(content)
}

struct RawHeader<'a> {
    kind: u8,
    device: &'a str,
    seq: u32,
    body: &'a [u8],
}

/// Reads type, id and seq as version 1 lays them out (whatever the version byte says). An empty
/// id is readable only for a NAK and only when `anonymous_nak` (frames from the gateway).
fn read_header(content: &[u8], anonymous_nak: bool) -> Result<RawHeader<'_>, &'static str> {
    let mut c = Cursor {
        buf: content,
        at: 1,
    };
    let kind = c.u8().ok_or(SHORT_HEADER)?;
    let id_len = usize::from(c.u8().ok_or(SHORT_HEADER)?);
    let anonymous = id_len == 0 && anonymous_nak && kind == kind::NAK;
    if (id_len == 0 && !anonymous) || id_len > MAX_ID {
        return Err(BAD_ID_LEN);
    }
    let id = c.take(id_len).ok_or(SHORT_HEADER)?;
    if !super::id_chars_ok(id) {
        return Err(BAD_ID_CHAR);
    }
    let device = core::str::from_utf8(id).map_err(|_| BAD_ID_CHAR)?;
    let seq = c.u32().ok_or(SHORT_HEADER)?;
    let body = content.get(c.at..).ok_or(SHORT_HEADER)?;
    Ok(RawHeader {
        kind,
        device,
        seq,
        body,
    })
}

type BodyFault = (DecodeError, &'static str);

fn malformed(detail: &'static str) -> BodyFault {
    (DecodeError::Malformed, detail)
}

/// Parses a body by its type byte (SPEC.md §4), including every range rule.
fn parse_body(kind: u8, body: &[u8]) -> Result<Body<'_>, BodyFault> {
    let mut c = Cursor { buf: body, at: 0 };
    let short = || malformed(SHORT);
    let parsed = match kind {
        kind::ALARM => {
            let action = c.u8().ok_or_else(short)?;
            if !(1..=3).contains(&action) {
                return Err(malformed("alarm action is not 1, 2 or 3"));
            }
            Body::Alarm { action }
        }
        kind::HEARTBEAT => Body::Heartbeat {
            battery_mv: c.u16().ok_or_else(short)?,
            battery_pct: c.u8().ok_or_else(short)?,
        },
        kind::CARD_TAP => {
            let uid_len = usize::from(c.u8().ok_or_else(short)?);
            if !(4..=MAX_UID).contains(&uid_len) {
                return Err(malformed("uid_len is not 4-10"));
            }
            let uid = c.take(uid_len).ok_or_else(short)?;
            let mac_len = usize::from(c.u8().ok_or_else(short)?);
            if mac_len > 8 {
                return Err(malformed("mac_len is above 8"));
            }
            let mac = c.take(mac_len).ok_or_else(short)?;
            // The optional price is the only thing that may follow the MAC.
            let price = if c.rest() == 4 { c.i32() } else { None };
            Body::CardTap { uid, mac, price }
        }
        kind::HEALTH => {
            let reading = c.u8().ok_or_else(short)?;
            if !(1..=6).contains(&reading) {
                return Err(malformed("health reading is not 1-6"));
            }
            let value1 = c.i32().ok_or_else(short)?;
            let value2 = c.i32().ok_or_else(short)?;
            // The optional context is the only thing that may follow the values.
            let context = if c.rest() == 1 { c.u8() } else { None };
            Body::Health {
                reading,
                value1,
                value2,
                context,
            }
        }
        kind::ACK => Body::Ack,
        kind::NAK => Body::Nak {
            reason: c.u8().ok_or_else(short)?,
        },
        kind::DISPLAY => {
            let result = c.u8().ok_or_else(short)?;
            let name_len = usize::from(c.u8().ok_or_else(short)?);
            if name_len > MAX_NAME {
                return Err(malformed("name_len is above 24"));
            }
            let name = c.take(name_len).ok_or_else(short)?;
            let name =
                core::str::from_utf8(name).map_err(|_| malformed("the name is not UTF-8"))?;
            Body::Display {
                result,
                name,
                price: c.i32().ok_or_else(short)?,
                subsidy: c.i32().ok_or_else(short)?,
                payable: c.i32().ok_or_else(short)?,
                balance: c.i32().ok_or_else(short)?,
            }
        }
        kind::READING_RESULT => {
            let result = c.u8().ok_or_else(short)?;
            let name_len = usize::from(c.u8().ok_or_else(short)?);
            if name_len > MAX_NAME {
                return Err(malformed("name_len is above 24"));
            }
            let name = c.take(name_len).ok_or_else(short)?;
            let name =
                core::str::from_utf8(name).map_err(|_| malformed("the name is not UTF-8"))?;
            Body::ReadingResult { result, name }
        }
        other => return Err((DecodeError::UnknownType(other), UNKNOWN_TYPE)),
    };
    if c.rest() != 0 {
        return Err(malformed(TRAILING));
    }
    Ok(parsed)
}

/// Decodes one COBS-encoded frame (without its 0x00 delimiter) in place, in either direction:
/// devices read the gateway's ACK, NAK (also anonymous: `device` empty) and DISPLAY with it.
pub fn decode(wire: &mut [u8]) -> Result<Frame<'_>, DecodeError> {
    let content = content(wire)?;
    let version = content[0]; // content() guarantees at least MIN_FRAME - 2 bytes
    if version != super::VERSION {
        return Err(DecodeError::Version(version));
    }
    let h = read_header(content, true).map_err(|_| DecodeError::Malformed)?;
    let body = parse_body(h.kind, h.body).map_err(|(e, _)| e)?;
    Ok(Frame {
        device: h.device,
        seq: h.seq,
        body,
    })
}

/// The gateway's first step on a received device frame (without its 0x00 delimiter): noise
/// checks, then version (NAK 3, addressed when the version-1 header happens to be readable,
/// else anonymous), then the header (NAK 1, anonymous). The body is not looked at.
pub fn decode_header(wire: &mut [u8]) -> Result<Header<'_>, Rejected<'_>> {
    let content = content(wire).map_err(Rejected::Noise)?;
    let header = read_header(content, false);
    if content[0] != super::VERSION {
        let (device, seq) = match &header {
            Ok(h) => (Some(h.device), h.seq),
            Err(_) => (None, 0),
        };
        return Err(Rejected::Refused(Refusal {
            reason: NakReason::UnsupportedVersion,
            device,
            seq,
            detail: NOT_V1,
        }));
    }
    let h = header.map_err(|detail| {
        Rejected::Refused(Refusal {
            reason: NakReason::Unparseable,
            device: None,
            seq: 0,
            detail,
        })
    })?;
    Ok(Header {
        device: h.device,
        seq: h.seq,
        kind: h.kind,
        body: h.body,
    })
}

/// Every check of SPEC.md §6.2 that needs no registry, in its order: noise, version, header,
/// type (unknown, or a gateway-to-device type: NAK 4), body (NAK 1). The gateway runs
/// [`decode_header`], its registry checks, then the rest of this; tests and tools use it whole.
pub fn check(wire: &mut [u8]) -> Result<Frame<'_>, Rejected<'_>> {
    let h = decode_header(wire)?;
    match h.message_type() {
        Some(t) if t.from_device() => {}
        Some(_) => {
            return Err(Rejected::Refused(
                h.refusal(NakReason::UnsupportedType, TO_DEVICE_TYPE),
            ))
        }
        None => {
            return Err(Rejected::Refused(
                h.refusal(NakReason::UnsupportedType, UNKNOWN_TYPE),
            ))
        }
    }
    let body = h.body().map_err(Rejected::Refused)?;
    Ok(Frame {
        device: h.device,
        seq: h.seq,
        body,
    })
}

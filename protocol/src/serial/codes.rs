//! The numbered things of the serial contract (SPEC.md §4–§6): message types, NAK reasons,
//! DISPLAY results, and the value rules the gateway applies when it fills a DISPLAY (masked name
//! cut to fit, amounts clamped) or turns a card UID into a roster card id.
//!
//! `Body::Nak::reason` and `Body::Display::result` stay plain `u8` on the wire types: a device must
//! still read a NAK or a DISPLAY whose code is newer than its firmware (SPEC.md §6.3). The enums
//! here are what the gateway writes and what a device matches on.

use super::MAX_NAME;

/// A message type (SPEC.md §4), the `type` byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0x01, button → gateway.
    Alarm,
    /// 0x02, device → gateway.
    Heartbeat,
    /// 0x03, reader → gateway.
    CardTap,
    /// 0x04, kiosk → gateway.
    Health,
    /// 0x10, gateway → device.
    Ack,
    /// 0x11, gateway → device.
    Nak,
    /// 0x12, gateway → reader.
    Display,
    /// 0x13, gateway → health kiosk.
    ReadingResult,
}

impl MessageType {
    /// The type byte.
    pub const fn code(self) -> u8 {
        match self {
            MessageType::Alarm => super::kind::ALARM,
            MessageType::Heartbeat => super::kind::HEARTBEAT,
            MessageType::CardTap => super::kind::CARD_TAP,
            MessageType::Health => super::kind::HEALTH,
            MessageType::Ack => super::kind::ACK,
            MessageType::Nak => super::kind::NAK,
            MessageType::Display => super::kind::DISPLAY,
            MessageType::ReadingResult => super::kind::READING_RESULT,
        }
    }

    /// The type of a type byte; None for a byte SPEC.md §4 does not define.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            super::kind::ALARM => MessageType::Alarm,
            super::kind::HEARTBEAT => MessageType::Heartbeat,
            super::kind::CARD_TAP => MessageType::CardTap,
            super::kind::HEALTH => MessageType::Health,
            super::kind::ACK => MessageType::Ack,
            super::kind::NAK => MessageType::Nak,
            super::kind::DISPLAY => MessageType::Display,
            super::kind::READING_RESULT => MessageType::ReadingResult,
            _ => return None,
        })
    }

    /// True for the types a device sends (0x01–0x04). The others, sent by a device, are refused
    /// with NAK 4.
    pub const fn from_device(self) -> bool {
        matches!(
            self,
            MessageType::Alarm
                | MessageType::Heartbeat
                | MessageType::CardTap
                | MessageType::Health
        )
    }
}

/// Why the gateway refused a frame with a good CRC: the `reason` byte of a NAK (SPEC.md §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NakReason {
    /// 1: good CRC, but the header or body does not fit SPEC.md §3–§4 (trailing bytes, short
    /// body, bad lengths, bad id characters, a value outside its range such as alarm action 9).
    Unparseable = 1,
    /// 2: the device id is not registered at the gateway.
    UnknownDevice = 2,
    /// 3: the version byte is not 1.
    UnsupportedVersion = 3,
    /// 4: an unknown type byte, a gateway-to-device type sent by a device, or a type this
    /// gateway does not take (CARD_TAP from a card reader without a canteen).
    UnsupportedType = 4,
    /// 5: the device is registered as a kind that may not send this type (a card reader's ALARM,
    /// a button's CARD_TAP).
    WrongKind = 5,
    /// 6: the gateway already committed this device's seq with different content; the device
    /// must send the event under a new seq.
    Conflict = 6,
    /// 7: a health reading that cannot be true of a living person (systolic 400, SpO2 120 %,
    /// diastolic above systolic) or outside the kiosk contract's ranges; measure again.
    Implausible = 7,
}

impl NakReason {
    /// The reason byte.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The reason of a reason byte; None for a code this version does not define.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => NakReason::Unparseable,
            2 => NakReason::UnknownDevice,
            3 => NakReason::UnsupportedVersion,
            4 => NakReason::UnsupportedType,
            5 => NakReason::WrongKind,
            6 => NakReason::Conflict,
            7 => NakReason::Implausible,
            _ => return None,
        })
    }
}

/// What a card reader shows: the `result` byte of a DISPLAY (SPEC.md §6.4, which also says which
/// amounts each result carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisplayResult {
    /// 0: settled and paid.
    Paid = 0,
    /// 1: the card is bound to nobody on the roster.
    UnknownCard = 1,
    /// 2: the card was reported lost.
    LostCard = 2,
    /// 3: no meal period now.
    OutsideMealPeriod = 3,
    /// 4: the balance does not cover the payable amount.
    InsufficientBalance = 4,
    /// 5: the meal period has no menu price and the reader sent none.
    NoPrice = 5,
    /// 6: refused for another reason (e.g. a price outside the plausible range); the reader
    /// shows "please see staff".
    Refused = 6,
}

impl DisplayResult {
    /// The result byte.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The result of a result byte; None for a code this version does not define (a reader
    /// shows it as [`DisplayResult::Refused`]).
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DisplayResult::Paid,
            1 => DisplayResult::UnknownCard,
            2 => DisplayResult::LostCard,
            3 => DisplayResult::OutsideMealPeriod,
            4 => DisplayResult::InsufficientBalance,
            5 => DisplayResult::NoPrice,
            6 => DisplayResult::Refused,
            _ => return None,
        })
    }
}

#[cfg(feature = "alloc")]
impl From<crate::payload::TapResult> for DisplayResult {
    fn from(r: crate::payload::TapResult) -> Self {
        use crate::payload::TapResult;
        match r {
            TapResult::Paid => DisplayResult::Paid,
            TapResult::UnknownCard => DisplayResult::UnknownCard,
            TapResult::LostCard => DisplayResult::LostCard,
            TapResult::OutsideMealPeriod => DisplayResult::OutsideMealPeriod,
            TapResult::InsufficientBalance => DisplayResult::InsufficientBalance,
            TapResult::NoPrice => DisplayResult::NoPrice,
            TapResult::Refused => DisplayResult::Refused,
        }
    }
}

/// What a health kiosk shows: the `result` byte of a READING_RESULT (SPEC.md §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadingResultCode {
    /// 0: the reading is stored for the resident named.
    Stored = 0,
    /// 1: stored, and it raised an alert: "please see the staff".
    SeeStaff = 1,
    /// 2: stored without a resident (no card tapped): staff will assign it.
    Unassigned = 2,
    /// 3: the card opened a session: the next readings are this resident's.
    SessionOpened = 3,
    /// 4: the card belongs to nobody on the roster; no session.
    UnknownCard = 4,
}

impl ReadingResultCode {
    /// The result byte.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The result of a result byte; None for a code this version does not define (a kiosk
    /// shows it like [`ReadingResultCode::SeeStaff`]).
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ReadingResultCode::Stored,
            1 => ReadingResultCode::SeeStaff,
            2 => ReadingResultCode::Unassigned,
            3 => ReadingResultCode::SessionOpened,
            4 => ReadingResultCode::UnknownCard,
            _ => return None,
        })
    }
}

#[cfg(feature = "alloc")]
impl From<crate::payload::ReadingResult> for ReadingResultCode {
    fn from(r: crate::payload::ReadingResult) -> Self {
        use crate::payload::ReadingResult as R;
        match r {
            R::Stored => ReadingResultCode::Stored,
            R::SeeStaff => ReadingResultCode::SeeStaff,
            R::Unassigned => ReadingResultCode::Unassigned,
            R::SessionOpened => ReadingResultCode::SessionOpened,
            R::UnknownCard => ReadingResultCode::UnknownCard,
        }
    }
}

/// The longest prefix of `name` that fits a DISPLAY's name field: at most [`MAX_NAME`] bytes of
/// UTF-8, cut at a character boundary (SPEC.md §6.4).
pub fn fit_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1; // 0 is always a boundary, so this stops
    }
    name.get(..end).unwrap_or("")
}

/// A gateway amount in fen as a DISPLAY's `i32`: values outside `i32` are clamped to
/// `i32::MIN` / `i32::MAX` (SPEC.md §6.4).
pub fn clamp_fen(fen: i64) -> i32 {
    i32::try_from(fen).unwrap_or(if fen < 0 { i32::MIN } else { i32::MAX })
}

/// Longest card UID of a CARD_TAP, bytes.
pub const MAX_UID: usize = 10;

/// The roster card id of a card UID (SPEC.md §6.5): the UID bytes in order, as upper-case hex,
/// no separators (`04 A1 B2 C3` → `04A1B2C3`). Needs no allocator.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CardId {
    hex: [u8; 2 * MAX_UID],
    len: usize,
}

impl CardId {
    /// The card id of `uid`; None when it is longer than [`MAX_UID`] bytes.
    pub fn from_uid(uid: &[u8]) -> Option<Self> {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        if uid.len() > MAX_UID {
            return None;
        }
        let mut hex = [0u8; 2 * MAX_UID];
        for (pair, b) in hex.chunks_exact_mut(2).zip(uid) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0F)];
        }
        Some(CardId {
            hex,
            len: 2 * uid.len(),
        })
    }

    /// The id, e.g. `04A1B2C3`.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        self.hex
            .get(..self.len)
            .and_then(|h| core::str::from_utf8(h).ok())
            .unwrap_or("")
    }
}

impl core::fmt::Debug for CardId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::fmt::Display for CardId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! NXP MFRC522 ISO/IEC 14443 A reader driver over an embedded-hal 1.0 [`SpiDevice`], the card
//! source of the canteen terminal ([`crate::reader::CardSource`]).
//!
//! What a terminal needs and nothing more: [`Mfrc522::init`] (soft reset, 25 ms answer timer,
//! 100 % ASK, CRC preset 0x6363, antenna on), [`Mfrc522::version`], REQA / WUPA returning the
//! ATQA, anticollision + SELECT over cascade levels 1–3 (4, 7 or 10-byte UIDs) and HLTA.
//! [`CardSource::read_uid`] does REQA → select → HLTA, so a card left lying on the reader is read
//! once, not on every poll (a halted card answers only WUPA, not REQA, until it leaves the field).
//!
//! Guarantees:
//! - **Bounded waits.** Completion is detected by polling ComIrqReg; the chip's own timer ends
//!   a silent exchange after 25 ms (→ "no card"), and the poll loop gives up after
//!   [`Mfrc522::with_poll_limit`] reads with [`Error::Timeout`] if the chip itself stops
//!   answering. The firmware loop never hangs on the reader.
//! - **No panics on bus data**: every length and index coming from the chip or the card is
//!   checked; a malformed answer is an [`Error`], not a panic. No allocation.
//! - **CRC_A is computed in software** ([`crc_a`]), not with the chip's CalcCRC coprocessor:
//!   it saves three SPI round trips and a second bounded wait per SELECT, and is testable without
//!   the chip. ModeReg still presets the coprocessor to 0x6363 as the datasheet recommends.
//! - **Collisions are reported, not resolved**: two cards in the field give
//!   [`Error::Collision`] (the resident is asked to tap one card); bit-level anticollision
//!   resolution is not implemented.
//!
//! SPI framing (datasheet §8.1.2): the address byte is `(reg << 1) & 0x7E`, bit 7 set for a read;
//! every register access is one `SpiDevice` transaction.

use crate::reader::CardSource;
use core::fmt;
use embedded_hal::spi::{Operation, SpiDevice};

/// Register addresses (datasheet §9.2).
mod reg {
    pub const COMMAND: u8 = 0x01;
    pub const COM_IRQ: u8 = 0x04;
    pub const ERROR: u8 = 0x06;
    pub const FIFO_DATA: u8 = 0x09;
    pub const FIFO_LEVEL: u8 = 0x0A;
    pub const CONTROL: u8 = 0x0C;
    pub const BIT_FRAMING: u8 = 0x0D;
    pub const MODE: u8 = 0x11;
    pub const TX_CONTROL: u8 = 0x14;
    pub const TX_ASK: u8 = 0x15;
    pub const T_MODE: u8 = 0x2A;
    pub const T_PRESCALER: u8 = 0x2B;
    pub const T_RELOAD_HI: u8 = 0x2C;
    pub const T_RELOAD_LO: u8 = 0x2D;
    pub const VERSION: u8 = 0x37;
}

/// Commands written to CommandReg (datasheet §10.3).
mod cmd {
    pub const IDLE: u8 = 0x00;
    pub const TRANSCEIVE: u8 = 0x0C;
    pub const SOFT_RESET: u8 = 0x0F;
}

/// CommandReg PowerDown bit: set while the chip is still coming out of a soft reset.
const POWER_DOWN: u8 = 0x10;
/// ComIrqReg bits.
const RX_IRQ: u8 = 0x20;
const IDLE_IRQ: u8 = 0x10;
const TIMER_IRQ: u8 = 0x01;
const CLEAR_ALL_IRQS: u8 = 0x7F;
/// ErrorReg bits.
const COLL_ERR: u8 = 0x08;
const BUFFER_OVFL: u8 = 0x10;
const PARITY_ERR: u8 = 0x02;
const PROTOCOL_ERR: u8 = 0x01;
/// FIFOLevelReg: FlushBuffer.
const FLUSH_FIFO: u8 = 0x80;
/// BitFramingReg: StartSend.
const START_SEND: u8 = 0x80;
/// ControlReg: RxLastBits (valid bits of the last received byte, 0 = all eight).
const RX_LAST_BITS: u8 = 0x07;
/// TxControlReg: Tx1RFEn | Tx2RFEn.
const ANTENNA_ON: u8 = 0x03;

/// ISO/IEC 14443-3 A commands.
const REQA: u8 = 0x26;
const WUPA: u8 = 0x52;
const HLTA: u8 = 0x50;
/// SEL codes of cascade levels 1, 2, 3.
const CASCADE_LEVELS: [u8; 3] = [0x93, 0x95, 0x97];
/// NVB of ANTICOLLISION (2 bytes sent, no UID bits) and of SELECT (7 bytes sent).
const NVB_ANTICOLLISION: u8 = 0x20;
const NVB_SELECT: u8 = 0x70;
/// First UID byte of a cascade level that is not the last one.
const CASCADE_TAG: u8 = 0x88;
/// SAK bit: UID not complete, go on with the next cascade level.
const SAK_UID_INCOMPLETE: u8 = 0x04;

/// The MFRC522 FIFO holds 64 bytes.
const FIFO_SIZE: usize = 64;

/// Default bound on ComIrqReg polls per exchange. One poll is a two-byte SPI transaction (a few
/// µs to ~20 µs depending on the clock), so 10 000 polls outlast the chip's own 25 ms timer at
/// any usual SPI clock; raise it for SPI clocks above ~10 MHz.
pub const DEFAULT_POLL_LIMIT: u32 = 10_000;

/// Driver errors; `E` is the SPI error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The SPI bus failed.
    Spi(E),
    /// The chip did not finish within the poll limit (its own timer should have fired first):
    /// check wiring, power and the reset pin.
    Timeout,
    /// More than one card answered at once.
    Collision,
    /// The UID check byte of an anticollision answer was wrong (a bad read; tap again).
    Bcc,
    /// The CRC_A of the card's SELECT answer was wrong (a bad read; tap again).
    Crc,
    /// The card's answer had the wrong length, a parity or protocol error, or an impossible
    /// content (e.g. no cascade tag where one is required).
    BadAnswer,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spi(e) => write!(f, "MFRC522 SPI error {e:?}; check the reader's wiring"),
            Error::Timeout => f.write_str(
                "MFRC522 did not complete an exchange; check its power, wiring and reset pin",
            ),
            Error::Collision => f.write_str("more than one card in the field; tap one card only"),
            Error::Bcc => f.write_str("card UID check byte wrong; tap the card again"),
            Error::Crc => f.write_str("card answer CRC wrong; tap the card again"),
            Error::BadAnswer => f.write_str("malformed card answer; tap the card again"),
        }
    }
}

/// What VersionReg says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChipVersion {
    /// 0x91: MFRC522 version 1.0.
    V1,
    /// 0x92: MFRC522 version 2.0.
    V2,
    /// Anything else: a clone (e.g. 0x88 FM17522) or, for 0x00 / 0xFF, no chip on the bus.
    Other(u8),
}

/// A selected card's UID (4, 7 or 10 bytes) and its final SAK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uid {
    bytes: [u8; 10],
    len: u8,
    sak: u8,
}

impl Uid {
    /// The UID bytes, cascade tags removed.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The SAK of the last cascade level (card type: 0x08 MIFARE Classic 1K, 0x20 ISO 14443-4 …).
    pub fn sak(&self) -> u8 {
        self.sak
    }

    fn append(&mut self, part: &[u8]) -> Option<()> {
        let start = usize::from(self.len);
        let end = start + part.len();
        self.bytes.get_mut(start..end)?.copy_from_slice(part);
        self.len = u8::try_from(end).ok()?;
        Some(())
    }
}

/// CRC_A of ISO/IEC 14443-3 (CRC-16, polynomial 0x1021 reflected, preset 0x6363), in the byte
/// order it is sent: low byte first.
pub fn crc_a(data: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0x6363;
    for &byte in data {
        let mut b = byte ^ (crc as u8);
        b ^= b << 4;
        let b = u16::from(b);
        crc = (crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4);
    }
    crc.to_le_bytes()
}

/// The MFRC522 on an SPI device (the device owns chip select).
pub struct Mfrc522<SPI> {
    spi: SPI,
    poll_limit: u32,
}

impl<SPI: SpiDevice> Mfrc522<SPI> {
    /// A driver on `spi`; no bus traffic until [`Mfrc522::init`].
    pub fn new(spi: SPI) -> Self {
        Mfrc522 {
            spi,
            poll_limit: DEFAULT_POLL_LIMIT,
        }
    }

    /// Sets how many status reads an exchange may take before [`Error::Timeout`] (at least 1).
    pub fn with_poll_limit(mut self, polls: u32) -> Self {
        self.poll_limit = polls.max(1);
        self
    }

    /// Gives back the SPI device.
    pub fn release(self) -> SPI {
        self.spi
    }

    /// Soft-resets the chip and sets it up for ISO 14443 A at 106 kbit/s: timer auto-start at the
    /// end of each transmission with a 25 ms reload (TPrescaler 0xA9 → 40 kHz, TReload 1000),
    /// 100 % ASK, CRC preset 0x6363, antenna on.
    pub fn init(&mut self) -> Result<(), Error<SPI::Error>> {
        self.write(reg::COMMAND, cmd::SOFT_RESET)?;
        self.wait_until(reg::COMMAND, |v| v & POWER_DOWN == 0)?;
        self.write(reg::T_MODE, 0x80)?;
        self.write(reg::T_PRESCALER, 0xA9)?;
        self.write(reg::T_RELOAD_HI, 0x03)?;
        self.write(reg::T_RELOAD_LO, 0xE8)?;
        self.write(reg::TX_ASK, 0x40)?;
        self.write(reg::MODE, 0x3D)?;
        self.antenna_on()
    }

    /// Switches the antenna drivers on (reads TxControlReg, writes it only if needed).
    pub fn antenna_on(&mut self) -> Result<(), Error<SPI::Error>> {
        let tx = self.read(reg::TX_CONTROL)?;
        if tx & ANTENNA_ON != ANTENNA_ON {
            self.write(reg::TX_CONTROL, tx | ANTENNA_ON)?;
        }
        Ok(())
    }

    /// Reads VersionReg.
    pub fn version(&mut self) -> Result<ChipVersion, Error<SPI::Error>> {
        Ok(match self.read(reg::VERSION)? {
            0x91 => ChipVersion::V1,
            0x92 => ChipVersion::V2,
            other => ChipVersion::Other(other),
        })
    }

    /// REQA: the ATQA of a card in the field that is not halted, None if no card answers.
    pub fn request_a(&mut self) -> Result<Option<[u8; 2]>, Error<SPI::Error>> {
        self.short_frame(REQA)
    }

    /// WUPA: like [`Mfrc522::request_a`] but also wakes halted cards.
    pub fn wake_up_a(&mut self) -> Result<Option<[u8; 2]>, Error<SPI::Error>> {
        self.short_frame(WUPA)
    }

    /// Anticollision and SELECT over the cascade levels, after REQA or WUPA. None if the card
    /// left the field during selection.
    pub fn select(&mut self) -> Result<Option<Uid>, Error<SPI::Error>> {
        let mut uid = Uid {
            bytes: [0; 10],
            len: 0,
            sak: 0,
        };
        for sel in CASCADE_LEVELS {
            let mut answer = [0u8; 5];
            match self.transceive(&[sel, NVB_ANTICOLLISION], 0, &mut answer)? {
                None => return Ok(None),
                Some(5) => {}
                Some(_) => return Err(Error::BadAnswer),
            }
            let [u0, u1, u2, u3, bcc] = answer;
            if u0 ^ u1 ^ u2 ^ u3 != bcc {
                return Err(Error::Bcc);
            }
            let [c0, c1] = crc_a(&[sel, NVB_SELECT, u0, u1, u2, u3, bcc]);
            let mut sak = [0u8; 3];
            let select = [sel, NVB_SELECT, u0, u1, u2, u3, bcc, c0, c1];
            match self.transceive(&select, 0, &mut sak)? {
                None => return Ok(None),
                Some(3) => {}
                Some(_) => return Err(Error::BadAnswer),
            }
            let [sak, s0, s1] = sak;
            if crc_a(&[sak]) != [s0, s1] {
                return Err(Error::Crc);
            }
            if sak & SAK_UID_INCOMPLETE == 0 {
                uid.append(&[u0, u1, u2, u3]).ok_or(Error::BadAnswer)?;
                uid.sak = sak;
                return Ok(Some(uid));
            }
            if u0 != CASCADE_TAG {
                return Err(Error::BadAnswer);
            }
            uid.append(&[u1, u2, u3]).ok_or(Error::BadAnswer)?;
        }
        // Still "UID incomplete" after cascade level 3.
        Err(Error::BadAnswer)
    }

    /// HLTA: puts the selected card to sleep until it leaves the field (or a WUPA). The card must
    /// stay silent; an answer is a "not acknowledged" and gives [`Error::BadAnswer`].
    pub fn halt(&mut self) -> Result<(), Error<SPI::Error>> {
        let [c0, c1] = crc_a(&[HLTA, 0x00]);
        let mut answer = [0u8; 4];
        match self.transceive(&[HLTA, 0x00, c0, c1], 0, &mut answer)? {
            None => Ok(()),
            Some(_) => Err(Error::BadAnswer),
        }
    }

    /// REQA / WUPA: a 7-bit short frame, a two-byte ATQA back.
    fn short_frame(&mut self, command: u8) -> Result<Option<[u8; 2]>, Error<SPI::Error>> {
        let mut atqa = [0u8; 2];
        match self.transceive(&[command], 7, &mut atqa)? {
            None => Ok(None),
            Some(2) => Ok(Some(atqa)),
            Some(_) => Err(Error::BadAnswer),
        }
    }

    /// One Transceive exchange: sends `send` (the last byte's `tx_last_bits` bits only, 0 = all
    /// eight), returns the number of bytes received into `recv`, or None if no card answered
    /// before the chip's timer expired.
    fn transceive(
        &mut self,
        send: &[u8],
        tx_last_bits: u8,
        recv: &mut [u8],
    ) -> Result<Option<usize>, Error<SPI::Error>> {
        let framing = tx_last_bits & 0x07;
        self.write(reg::COMMAND, cmd::IDLE)?;
        self.write(reg::COM_IRQ, CLEAR_ALL_IRQS)?;
        self.write(reg::FIFO_LEVEL, FLUSH_FIFO)?;
        self.write_fifo(send)?;
        self.write(reg::BIT_FRAMING, framing)?;
        self.write(reg::COMMAND, cmd::TRANSCEIVE)?;
        self.write(reg::BIT_FRAMING, START_SEND | framing)?;
        if !self.wait_for_answer()? {
            return Ok(None);
        }
        let errors = self.read(reg::ERROR)?;
        if errors & COLL_ERR != 0 {
            return Err(Error::Collision);
        }
        if errors & (BUFFER_OVFL | PARITY_ERR | PROTOCOL_ERR) != 0 {
            return Err(Error::BadAnswer);
        }
        let level = usize::from(self.read(reg::FIFO_LEVEL)? & 0x7F);
        let into = recv.get_mut(..level).ok_or(Error::BadAnswer)?;
        self.read_fifo(into)?;
        if self.read(reg::CONTROL)? & RX_LAST_BITS != 0 {
            // A partial last byte: only happens with a collision we do not resolve.
            return Err(Error::BadAnswer);
        }
        Ok(Some(level))
    }

    /// Polls ComIrqReg: true once something was received, false when the chip's timer expired
    /// first (no card answered).
    fn wait_for_answer(&mut self) -> Result<bool, Error<SPI::Error>> {
        for _ in 0..self.poll_limit {
            let irq = self.read(reg::COM_IRQ)?;
            if irq & (RX_IRQ | IDLE_IRQ) != 0 {
                return Ok(true);
            }
            if irq & TIMER_IRQ != 0 {
                return Ok(false);
            }
        }
        // Best effort: stop the command so the chip is idle for the next attempt; the timeout
        // is what the caller needs to hear about.
        let _ = self.write(reg::COMMAND, cmd::IDLE);
        Err(Error::Timeout)
    }

    /// Polls `register` until `done` holds, at most the poll limit.
    fn wait_until(
        &mut self,
        register: u8,
        done: impl Fn(u8) -> bool,
    ) -> Result<(), Error<SPI::Error>> {
        for _ in 0..self.poll_limit {
            if done(self.read(register)?) {
                return Ok(());
            }
        }
        Err(Error::Timeout)
    }

    fn read(&mut self, register: u8) -> Result<u8, Error<SPI::Error>> {
        let mut frame = [read_address(register), 0];
        self.spi
            .transaction(&mut [Operation::TransferInPlace(&mut frame)])
            .map_err(Error::Spi)?;
        Ok(frame[1])
    }

    fn write(&mut self, register: u8, value: u8) -> Result<(), Error<SPI::Error>> {
        self.spi
            .transaction(&mut [Operation::Write(&[write_address(register), value])])
            .map_err(Error::Spi)
    }

    fn write_fifo(&mut self, data: &[u8]) -> Result<(), Error<SPI::Error>> {
        let mut frame = [0u8; FIFO_SIZE + 1];
        let frame = frame.get_mut(..=data.len()).ok_or(Error::BadAnswer)?;
        frame[0] = write_address(reg::FIFO_DATA);
        frame[1..].copy_from_slice(data);
        self.spi
            .transaction(&mut [Operation::Write(frame)])
            .map_err(Error::Spi)
    }

    /// Reads `into.len()` FIFO bytes in one transaction: the address is repeated for every byte
    /// and the chip answers each one on the following byte (datasheet §8.1.2.1).
    fn read_fifo(&mut self, into: &mut [u8]) -> Result<(), Error<SPI::Error>> {
        if into.is_empty() {
            return Ok(());
        }
        let mut frame = [read_address(reg::FIFO_DATA); FIFO_SIZE + 1];
        let frame = frame.get_mut(..=into.len()).ok_or(Error::BadAnswer)?;
        frame[into.len()] = 0;
        self.spi
            .transaction(&mut [Operation::TransferInPlace(frame)])
            .map_err(Error::Spi)?;
        into.copy_from_slice(&frame[1..]);
        Ok(())
    }
}

impl<SPI: SpiDevice> CardSource for Mfrc522<SPI> {
    type Error = Error<SPI::Error>;

    /// REQA → select → HLTA. A card that does not acknowledge the HLTA still counts as read
    /// (at worst it is read again on the next poll, within the gateway's double-tap window).
    fn read_uid(&mut self, uid: &mut [u8; 10]) -> Result<Option<usize>, Self::Error> {
        if self.request_a()?.is_none() {
            return Ok(None);
        }
        let Some(card) = self.select()? else {
            return Ok(None);
        };
        match self.halt() {
            Ok(()) | Err(Error::BadAnswer | Error::Collision) => {}
            Err(e) => return Err(e),
        }
        let bytes = card.as_bytes();
        uid.get_mut(..bytes.len())
            .ok_or(Error::BadAnswer)?
            .copy_from_slice(bytes);
        Ok(Some(bytes.len()))
    }
}

/// SPI address byte of a write: `(reg << 1) & 0x7E`.
const fn write_address(register: u8) -> u8 {
    (register << 1) & 0x7E
}

/// SPI address byte of a read: the write address with bit 7 set.
const fn read_address(register: u8) -> u8 {
    write_address(register) | 0x80
}

//! Shared helpers for the firmware tests: the MFRC522's SPI traffic as embedded-hal-mock
//! transactions, built from the datasheet (register addresses, address byte, Transceive
//! sequence) rather than from the driver's own constants, and an independent CRC_A.
#![allow(dead_code)] // each test binary uses a different subset

use embedded_hal_mock::eh1::spi::{Mock, Transaction as T};

/// MFRC522 registers (datasheet §9.2).
pub mod reg {
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

/// ComIrqReg after a card answered: TxIRq | RxIRq.
pub const IRQ_RECEIVED: u8 = 0x60;
/// ComIrqReg after the timer ran out with no answer: TxIRq | TimerIRq.
pub const IRQ_TIMER: u8 = 0x41;

/// One SpiDevice transaction around `op`.
fn transaction(op: T<u8>) -> Vec<T<u8>> {
    vec![T::transaction_start(), op, T::transaction_end()]
}

/// A register write: address byte `(reg << 1) & 0x7E`, then the value.
pub fn write_reg(reg: u8, value: u8) -> Vec<T<u8>> {
    transaction(T::write_vec(vec![(reg << 1) & 0x7E, value]))
}

/// A register read answering `value`: address byte with bit 7 set, the value on the next byte.
pub fn read_reg(reg: u8, value: u8) -> Vec<T<u8>> {
    transaction(T::transfer_in_place(
        vec![((reg << 1) & 0x7E) | 0x80, 0],
        vec![0, value],
    ))
}

/// `data` written into the FIFO in one transaction.
pub fn write_fifo(data: &[u8]) -> Vec<T<u8>> {
    let mut frame = vec![reg::FIFO_DATA << 1];
    frame.extend_from_slice(data);
    transaction(T::write_vec(frame))
}

/// `data` read from the FIFO in one transaction (address repeated per byte, then 0).
pub fn read_fifo(data: &[u8]) -> Vec<T<u8>> {
    let mut sent = vec![(reg::FIFO_DATA << 1) | 0x80; data.len()];
    sent.push(0);
    let mut answer = vec![0];
    answer.extend_from_slice(data);
    transaction(T::transfer_in_place(sent, answer))
}

/// The soft reset and set-up of `init` (chip ready at the second CommandReg read, antenna off).
pub fn init_sequence() -> Vec<T<u8>> {
    [
        write_reg(reg::COMMAND, 0x0F),
        read_reg(reg::COMMAND, 0x10), // PowerDown still set: the oscillator is starting
        read_reg(reg::COMMAND, 0x00),
        write_reg(reg::T_MODE, 0x80),
        write_reg(reg::T_PRESCALER, 0xA9),
        write_reg(reg::T_RELOAD_HI, 0x03),
        write_reg(reg::T_RELOAD_LO, 0xE8),
        write_reg(reg::TX_ASK, 0x40),
        write_reg(reg::MODE, 0x3D),
        read_reg(reg::TX_CONTROL, 0x80),
        write_reg(reg::TX_CONTROL, 0x83),
    ]
    .concat()
}

/// The start of a Transceive exchange sending `sent` with `last_bits` valid bits in its last
/// byte (0 = all eight).
pub fn transceive_start(sent: &[u8], last_bits: u8) -> Vec<T<u8>> {
    [
        write_reg(reg::COMMAND, 0x00),
        write_reg(reg::COM_IRQ, 0x7F),
        write_reg(reg::FIFO_LEVEL, 0x80),
        write_fifo(sent),
        write_reg(reg::BIT_FRAMING, last_bits),
        write_reg(reg::COMMAND, 0x0C),
        write_reg(reg::BIT_FRAMING, 0x80 | last_bits),
    ]
    .concat()
}

/// A Transceive exchange the card answers with `answer` (whole bytes, no errors).
pub fn exchange(sent: &[u8], last_bits: u8, answer: &[u8]) -> Vec<T<u8>> {
    [
        transceive_start(sent, last_bits),
        read_reg(reg::COM_IRQ, 0x00), // still transmitting
        read_reg(reg::COM_IRQ, IRQ_RECEIVED),
        read_reg(reg::ERROR, 0x00),
        read_reg(reg::FIFO_LEVEL, answer.len() as u8),
        read_fifo(answer),
        read_reg(reg::CONTROL, 0x10),
    ]
    .concat()
}

/// A Transceive exchange no card answers (the chip's timer fires).
pub fn unanswered(sent: &[u8], last_bits: u8) -> Vec<T<u8>> {
    [
        transceive_start(sent, last_bits),
        read_reg(reg::COM_IRQ, IRQ_TIMER),
    ]
    .concat()
}

/// CRC_A (ISO/IEC 14443-3 annex B), bit by bit, low byte first.
pub fn crc_a(data: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0x6363;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

/// `data` followed by its CRC_A.
pub fn with_crc(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.extend_from_slice(&crc_a(data));
    v
}

/// One cascade level: ANTICOLLISION answered with `part` and its BCC, SELECT answered with `sak`.
pub fn cascade_level(sel: u8, part: [u8; 4], sak: u8) -> Vec<T<u8>> {
    let bcc = part.iter().fold(0, |a, b| a ^ b);
    let mut uid_bcc = part.to_vec();
    uid_bcc.push(bcc);
    let mut select = vec![sel, 0x70];
    select.extend_from_slice(&uid_bcc);
    [
        exchange(&[sel, 0x20], 0, &uid_bcc),
        exchange(&with_crc(&select), 0, &with_crc(&[sak])),
    ]
    .concat()
}

/// REQA answered with `atqa`.
pub fn reqa(atqa: [u8; 2]) -> Vec<T<u8>> {
    exchange(&[0x26], 7, &atqa)
}

/// HLTA, to which the card (correctly) does not answer.
pub fn hlta() -> Vec<T<u8>> {
    unanswered(&with_crc(&[0x50, 0x00]), 0)
}

/// A mock expecting `parts` in order.
pub fn spi(parts: &[Vec<T<u8>>]) -> Mock<u8> {
    Mock::new(&parts.concat())
}

/// A button input (active low) the test presses and releases; clones share the state.
#[derive(Clone, Default)]
pub struct ScriptedPin(std::rc::Rc<std::cell::Cell<bool>>);

impl ScriptedPin {
    /// Presses (`true`) or releases the button.
    pub fn set_pressed(&self, pressed: bool) {
        self.0.set(pressed);
    }
}

impl embedded_hal::digital::ErrorType for ScriptedPin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::InputPin for ScriptedPin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.0.get())
    }
    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(self.0.get())
    }
}

/// An LED nobody looks at.
pub struct NoLed;

impl embedded_hal::digital::ErrorType for NoLed {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// An LED the test can look at; clones share the state.
#[derive(Clone, Default)]
pub struct SharedLed(std::rc::Rc<std::cell::Cell<bool>>);

impl SharedLed {
    /// True while the LED is lit.
    pub fn is_on(&self) -> bool {
        self.0.get()
    }
}

impl embedded_hal::digital::ErrorType for SharedLed {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for SharedLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.set(true);
        Ok(())
    }
}

/// A card source holding at most one 4-byte card, read once.
pub struct OneCard(pub Option<[u8; 4]>);

impl eldergate_firmware::reader::CardSource for OneCard {
    type Error = ();
    fn read_uid(&mut self, uid: &mut [u8; 10]) -> Result<Option<usize>, ()> {
        Ok(self.0.take().map(|c| {
            uid[..4].copy_from_slice(&c);
            4
        }))
    }
}

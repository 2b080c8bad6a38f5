//! Reference firmware logic for eldergate devices, on embedded-hal 1.0 traits.
//!
//! `#![no_std]`, no allocator, no panics on input. Time is passed in as milliseconds since boot
//! (`now_ms`), so the logic runs the same on a microcontroller, in the host simulator and in tests.
//!
//! - [`button`]: debounced press classification (short = SOS, double = check-in, long = cancel)
//!   and the alarm-button driver with LED feedback.
//! - [`link`]: the retransmitting outbox: an event is resent with backoff until the gateway's ACK
//!   for its sequence number arrives (protocol/SPEC.md §5).
//! - [`reader`]: the card-reader terminal: a tap is sent, the gateway's DISPLAY answer is shown,
//!   a timeout message if none comes.
//! - [`mfrc522`]: the NXP MFRC522 card-reader driver (SPI), the terminal's [`reader::CardSource`]:
//!   REQA, anticollision/SELECT over cascade levels 1–3, HLTA; every wait bounded.
//! - [`seq`]: sequence numbers kept across resets: a high-water mark persisted a block ahead
//!   through a [`seq::SeqStore`], so no number is reused after a reset and flash is written once
//!   per block. The `*_persisted` methods of the button, outbox and terminal use it; the plain
//!   constructors take [`seq::SeqAllocator::first_seq`]. While the store fails, the outbox and
//!   terminal hold their event; the alarm button sends it anyway (an alarm never waits).
#![no_std]
#![deny(missing_docs)]

pub mod button;
pub mod link;
pub mod mfrc522;
pub mod reader;
pub mod seq;

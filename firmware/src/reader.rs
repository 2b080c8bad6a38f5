//! The card-reader terminal: a tapped card becomes a CARD_TAP frame; the gateway's DISPLAY
//! answer (same sequence number) is shown; with no answer in time, a timeout message is shown and
//! the tap is not retried by the terminal (the resident taps again: a second tap within the
//! gateway's window is the same meal).
//!
//! A price typed at the counter ([`Terminal::enter_price`]) goes with the next tap only, then is
//! cleared: a price left over from one resident is never charged to the next.

use crate::seq::{PersistedPollError, SeqAllocator, SeqStore};
use eldergate_protocol::serial::{encode, Body, Frame, MAX_WIRE};

/// How long the terminal waits for the gateway's answer.
pub const ANSWER_TIMEOUT_MS: u64 = 3_000;

/// A card UID source ([`crate::mfrc522::Mfrc522`] implements it).
pub trait CardSource {
    /// Driver error.
    type Error;
    /// A card's UID if one is in the field now (4–10 bytes written into `uid`).
    fn read_uid(&mut self, uid: &mut [u8; 10]) -> Result<Option<usize>, Self::Error>;
}

/// The terminal's display.
pub trait Display {
    /// Shows a settlement answer (amounts in fen; name already masked by the gateway).
    fn show_answer(
        &mut self,
        result: u8,
        name: &str,
        price: i32,
        subsidy: i32,
        payable: i32,
        balance: i32,
    );
    /// Shows a fixed message.
    fn show_message(&mut self, message: Message);
}

/// Fixed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Waiting for the gateway.
    Processing,
    /// No answer in time: "网络超时，请重新刷卡".
    Timeout,
}

/// The terminal state machine.
pub struct Terminal<D> {
    display: D,
    next_seq: u32,
    waiting: Option<(u32, u64)>,
    price: Option<i32>,
}

impl<D: Display> Terminal<D> {
    /// A terminal whose next tap gets `first_seq`.
    pub fn new(display: D, first_seq: u32) -> Self {
        Terminal {
            display,
            next_seq: first_seq,
            waiting: None,
            price: None,
        }
    }

    /// The counter staff typed a price (fen) for the next tap; None clears it (the meal period's
    /// menu price applies).
    pub fn enter_price(&mut self, price_fen: Option<i32>) {
        self.price = price_fen;
    }

    /// The price the next tap will carry.
    pub fn entered_price(&self) -> Option<i32> {
        self.price
    }

    /// Reads the card source; on a new card writes a CARD_TAP frame into `out` and returns its
    /// length. Ignores cards while waiting for an answer.
    pub fn poll<C: CardSource>(
        &mut self,
        cards: &mut C,
        device: &str,
        now_ms: u64,
        out: &mut [u8; MAX_WIRE],
    ) -> Result<Option<usize>, C::Error> {
        if self.is_waiting(now_ms) {
            return Ok(None);
        }
        self.read_and_send(cards, device, now_ms, out)
    }

    /// [`Terminal::poll`] for a terminal that keeps its sequence numbers across resets: the card
    /// is read only once `seqs` has persisted the number its tap will get (SPEC.md §5). If the
    /// store fails, the error is returned and no card is read (a card in the field stays unread
    /// and un-halted, so it is read as soon as a store succeeds).
    pub fn poll_persisted<C: CardSource, S: SeqStore>(
        &mut self,
        cards: &mut C,
        seqs: &mut SeqAllocator<S>,
        device: &str,
        now_ms: u64,
        out: &mut [u8; MAX_WIRE],
    ) -> Result<Option<usize>, PersistedPollError<C::Error, S::Error>> {
        if self.is_waiting(now_ms) {
            return Ok(None);
        }
        seqs.reserve(self.next_seq)
            .map_err(PersistedPollError::SeqStore)?;
        self.read_and_send(cards, device, now_ms, out)
            .map_err(PersistedPollError::Device)
    }

    /// The sequence number the next tap will get.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// True while an answer is awaited; shows the timeout message when the wait ends unanswered.
    fn is_waiting(&mut self, now_ms: u64) -> bool {
        if let Some((_, since)) = self.waiting {
            if now_ms.saturating_sub(since) >= ANSWER_TIMEOUT_MS {
                self.waiting = None;
                self.display.show_message(Message::Timeout);
            }
            return true;
        }
        false
    }

    fn read_and_send<C: CardSource>(
        &mut self,
        cards: &mut C,
        device: &str,
        now_ms: u64,
        out: &mut [u8; MAX_WIRE],
    ) -> Result<Option<usize>, C::Error> {
        let mut uid = [0u8; 10];
        let Some(n) = cards.read_uid(&mut uid)? else {
            return Ok(None);
        };
        let Some(uid) = uid.get(..n.min(10)) else {
            return Ok(None);
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let len = encode(
            &Frame {
                device,
                seq,
                body: Body::CardTap {
                    uid,
                    mac: &[],
                    price: self.price,
                },
            },
            out,
        )
        .ok();
        if len.is_some() {
            self.price = None;
            self.waiting = Some((seq, now_ms));
            self.display.show_message(Message::Processing);
        }
        Ok(len)
    }

    /// Handles a frame from the gateway: a DISPLAY for the tap being waited on is shown.
    pub fn on_frame(&mut self, frame: &Frame<'_>) {
        if let (
            Some((seq, _)),
            Body::Display {
                result,
                name,
                price,
                subsidy,
                payable,
                balance,
            },
        ) = (self.waiting, frame.body)
        {
            if frame.seq == seq {
                self.waiting = None;
                self.display
                    .show_answer(result, name, price, subsidy, payable, balance);
            }
        }
    }

    /// The display, for inspection.
    pub fn display(&self) -> &D {
        &self.display
    }
}

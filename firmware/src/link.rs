//! The retransmitting outbox of a device (protocol/SPEC.md §5): every event gets the next
//! sequence number, is sent at once, and is resent after 1 s, 2 s, 4 s … (capped at 30 s) until
//! the gateway ACKs that sequence number. An ACK for an unknown sequence number is ignored.

use crate::seq::{PersistedPollError, SeqAllocator, SeqStore};
use eldergate_protocol::serial::{encode, Body, Frame, MAX_WIRE};

/// First retransmission delay.
pub const FIRST_RETRY_MS: u64 = 1_000;
/// Longest retransmission delay.
pub const MAX_RETRY_MS: u64 = 30_000;
/// After this many sends without an ACK, [`Outbox::failing`] reports the link as failing.
pub const FAILING_AFTER: u32 = 4;

#[derive(Clone, Copy)]
struct Pending {
    seq: u32,
    action: u8,
    next_ms: u64,
    delay_ms: u64,
    sends: u32,
}

/// Up to `N` unacknowledged alarm events.
pub struct Outbox<const N: usize> {
    pending: [Option<Pending>; N],
    next_seq: u32,
}

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxError {
    /// All `N` slots hold unacknowledged events.
    Full,
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox whose first event gets `first_seq` (restore it from flash after a reset,
    /// or start from a random value; SPEC.md §5).
    pub const fn new(first_seq: u32) -> Self {
        Outbox {
            pending: [None; N],
            next_seq: first_seq,
        }
    }

    /// The sequence number the next event will get (persist it where the hardware allows).
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Queues an ALARM event (`action` 1 press, 2 cancel, 3 check-in), due at once.
    pub fn push(&mut self, action: u8, now_ms: u64) -> Result<u32, OutboxError> {
        let slot = self
            .pending
            .iter_mut()
            .find(|p| p.is_none())
            .ok_or(OutboxError::Full)?;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        *slot = Some(Pending {
            seq,
            action,
            next_ms: now_ms,
            delay_ms: FIRST_RETRY_MS,
            sends: 0,
        });
        Ok(seq)
    }

    /// Like [`Outbox::push`], but only with a sequence number persisted by `seqs` (SPEC.md §5):
    /// if the store fails, nothing is queued and the error is returned; push again later.
    pub fn push_persisted<S: SeqStore>(
        &mut self,
        action: u8,
        now_ms: u64,
        seqs: &mut SeqAllocator<S>,
    ) -> Result<u32, PersistedPollError<OutboxError, S::Error>> {
        if self.is_full() {
            return Err(PersistedPollError::Device(OutboxError::Full));
        }
        seqs.reserve(self.next_seq)
            .map_err(PersistedPollError::SeqStore)?;
        self.push(action, now_ms)
            .map_err(PersistedPollError::Device)
    }

    /// True when all `N` slots hold unacknowledged events.
    pub fn is_full(&self) -> bool {
        self.pending.iter().all(Option::is_some)
    }

    /// The gateway acknowledged `seq`. Returns true if it was pending.
    pub fn ack(&mut self, seq: u32) -> bool {
        for p in self.pending.iter_mut() {
            if p.is_some_and(|x| x.seq == seq) {
                *p = None;
                return true;
            }
        }
        false
    }

    /// Writes the next frame due at `now_ms` (first send or retransmission) into `out` and
    /// returns its length; None if nothing is due.
    pub fn poll(&mut self, device: &str, now_ms: u64, out: &mut [u8; MAX_WIRE]) -> Option<usize> {
        let p = self
            .pending
            .iter_mut()
            .flatten()
            .filter(|p| p.next_ms <= now_ms)
            .min_by_key(|p| p.seq)?;
        p.sends += 1;
        p.next_ms = now_ms + p.delay_ms;
        p.delay_ms = (p.delay_ms * 2).min(MAX_RETRY_MS);
        encode(
            &Frame {
                device,
                seq: p.seq,
                body: Body::Alarm { action: p.action },
            },
            out,
        )
        .ok()
    }

    /// True while nothing waits for an ACK.
    pub fn is_idle(&self) -> bool {
        self.pending.iter().all(Option::is_none)
    }

    /// True when some event has been sent [`FAILING_AFTER`] times without an ACK.
    pub fn failing(&self) -> bool {
        self.pending
            .iter()
            .flatten()
            .any(|p| p.sends >= FAILING_AFTER)
    }
}

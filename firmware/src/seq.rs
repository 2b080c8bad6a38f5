//! Sequence numbers kept across resets (protocol/SPEC.md §5) without writing flash per event.
//!
//! The gateway drops a frame whose (device, seq) it has seen in the last 24 h, so a device that
//! reset and started counting again from an old number would have its next alarms silently
//! deduplicated away. A device with storage therefore persists a **high-water mark** in blocks:
//! before the first number of a block is used, `mark = seq + block` is stored; after a reset the
//! device starts at the stored mark. Every number used before the reset is below that mark, so
//! none is ever reused — even if the reset came right before a store. Numbers reserved but not
//! used are skipped (gaps are legal; the gateway only dedupes).
//!
//! Guarantees of [`SeqAllocator`]:
//! - **A number is reserved only once a mark above it is persisted**:
//!   [`SeqAllocator::reserve`] succeeds for a number only then; a device that sends only
//!   reserved numbers never reuses one across resets.
//! - **One store per block** (default [`DEFAULT_SEQ_BLOCK`] = 64 events), not one per event,
//!   and none in [`SeqAllocator::start`]: the outbox and button store at their first event; the
//!   terminal, which reserves before it reads a card, at its first poll.
//! - **A failed store is reported** ([`SeqAllocator::reserve`] returns the store's error) and the
//!   number is not reserved; it is retried on the next call. The mark never moves backwards.
//!
//! What a device does when the store fails is its own policy:
//! - **Strict — the event waits** until its number is persisted:
//!   [`crate::link::Outbox::push_persisted`] queues nothing, and
//!   [`crate::reader::Terminal::poll_persisted`] reads no card (a meal tap may wait). These never
//!   reuse a number.
//! - **Alarms first — the alarm never waits**: [`crate::button::AlarmButton::poll_persisted`]
//!   sends the action anyway with the outbox's next number, reports the error, blinks the LED
//!   fast and retries the store (at the next action, else once per
//!   [`crate::button::SEQ_STORE_RETRY_MS`]) until it works. The accepted cost: a reset *before*
//!   a store succeeds starts again at the old mark, so numbers sent above it during the fault
//!   may be reused, and the gateway takes a reused number as a duplicate for 24 h. A held SOS
//!   is a certain loss; a reuse needs a reset during a storage fault — so the alarm wins.
//!
//! Comparisons use serial-number arithmetic (RFC 1982) on `u32`, so counting across 2³² wraps.
//!
//! The plain constructors of the outbox, button and terminal take [`SeqAllocator::first_seq`].

use core::convert::Infallible;
use core::fmt;

/// Numbers reserved per store: a flash write every 64 events, a gap of at most 64 after a reset.
pub const DEFAULT_SEQ_BLOCK: u32 = 64;

/// The largest block accepted; larger ones are clamped (keeps serial arithmetic unambiguous).
pub const MAX_SEQ_BLOCK: u32 = 1 << 30;

/// Where a device keeps its high-water mark (a flash page, EEPROM cell, RTC backup register …).
pub trait SeqStore {
    /// Storage error.
    type Error;
    /// The stored mark, None if nothing was ever stored.
    fn load(&mut self) -> Result<Option<u32>, Self::Error>;
    /// Durably stores `mark`: after a reset the device starts at `mark` or above.
    fn store(&mut self, mark: u32) -> Result<(), Self::Error>;
}

impl<T: SeqStore + ?Sized> SeqStore for &mut T {
    type Error = T::Error;
    fn load(&mut self) -> Result<Option<u32>, Self::Error> {
        (**self).load()
    }
    fn store(&mut self, mark: u32) -> Result<(), Self::Error> {
        (**self).store(mark)
    }
}

/// Hardware without storage: nothing is persisted; start from a random value (SPEC.md §5).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSeqStore;

impl SeqStore for NoSeqStore {
    type Error = Infallible;
    fn load(&mut self) -> Result<Option<u32>, Infallible> {
        Ok(None)
    }
    fn store(&mut self, _mark: u32) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A store in RAM, for tests and the host simulator: it survives a simulated reset as long as
/// the value itself is kept. Counts its writes, and can be told to fail them.
#[derive(Debug, Default, Clone)]
pub struct MemorySeqStore {
    mark: Option<u32>,
    writes: u32,
    attempts: u32,
    failing: bool,
}

/// The simulated write failure of [`MemorySeqStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatedWriteFailure;

impl fmt::Display for SimulatedWriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated sequence-number store failure")
    }
}

impl MemorySeqStore {
    /// An empty store (as a device fresh from the factory).
    pub const fn new() -> Self {
        MemorySeqStore {
            mark: None,
            writes: 0,
            attempts: 0,
            failing: false,
        }
    }

    /// The stored mark.
    pub fn mark(&self) -> Option<u32> {
        self.mark
    }

    /// How many successful stores there were.
    pub fn writes(&self) -> u32 {
        self.writes
    }

    /// How many stores were attempted, failed ones included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// From now on, stores fail (`true`) or succeed again (`false`).
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }
}

impl SeqStore for MemorySeqStore {
    type Error = SimulatedWriteFailure;
    fn load(&mut self) -> Result<Option<u32>, SimulatedWriteFailure> {
        Ok(self.mark)
    }
    fn store(&mut self, mark: u32) -> Result<(), SimulatedWriteFailure> {
        self.attempts = self.attempts.saturating_add(1);
        if self.failing {
            return Err(SimulatedWriteFailure);
        }
        self.mark = Some(mark);
        self.writes += 1;
        Ok(())
    }
}

/// Hands out the first sequence number after a reset and persists the high-water mark a block
/// ahead of the numbers in use. The device's own counter ([`crate::link::Outbox`],
/// [`crate::reader::Terminal`]) stays the owner of "the next number"; the allocator only says
/// whether that number may be sent.
#[derive(Debug)]
pub struct SeqAllocator<S> {
    store: S,
    block: u32,
    first: u32,
    /// Numbers strictly below this one (serially) are covered by a persisted mark.
    mark: u32,
}

impl<S: SeqStore> SeqAllocator<S> {
    /// Loads the stored mark; with none stored, starts from `fresh` (a random value, or 0 on
    /// a device that has never sent anything). `block` is clamped to 1..=[`MAX_SEQ_BLOCK`].
    /// Nothing is written here: the first store happens at the first event.
    pub fn start(mut store: S, fresh: u32, block: u32) -> Result<Self, S::Error> {
        let first = store.load()?.unwrap_or(fresh);
        Ok(SeqAllocator {
            store,
            block: block.clamp(1, MAX_SEQ_BLOCK),
            first,
            mark: first,
        })
    }

    /// The number the device's first event gets after this reset: pass it to
    /// [`crate::link::Outbox::new`], [`crate::button::AlarmButton::new`] or
    /// [`crate::reader::Terminal::new`].
    pub fn first_seq(&self) -> u32 {
        self.first
    }

    /// True if `seq` is below the persisted mark, so it may be sent.
    pub fn is_reserved(&self, seq: u32) -> bool {
        serial_before(seq, self.mark)
    }

    /// Makes sure `seq` may be sent: if it is not below the persisted mark, stores
    /// `seq + block` first. On a store error `seq` stays unreserved; call again later. Whether
    /// the device may send it meanwhile is its policy (see the module docs: the terminal and
    /// the strict outbox keep the event; the alarm button sends it).
    pub fn reserve(&mut self, seq: u32) -> Result<(), S::Error> {
        if self.is_reserved(seq) {
            return Ok(());
        }
        let mark = seq.wrapping_add(self.block);
        self.store.store(mark)?;
        self.mark = mark;
        Ok(())
    }

    /// The persisted mark this allocator knows of (the start value before the first store).
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// The store, for inspection.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, e.g. to share its flash driver.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives back the store.
    pub fn release(self) -> S {
        self.store
    }
}

/// `a` comes before `b` in serial-number arithmetic (within half the number space).
fn serial_before(a: u32, b: u32) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < (1 << 31)
}

/// A device poll that also reserves sequence numbers failed ([`crate::link::Outbox::push_persisted`],
/// [`crate::reader::Terminal::poll_persisted`]; the alarm button reports a store error in
/// [`crate::button::ButtonPoll`] instead, as its alarm is sent anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistedPollError<D, S> {
    /// The device itself (pin, card reader, outbox) failed.
    Device(D),
    /// The sequence-number store failed: the event waits until a store succeeds.
    SeqStore(S),
}

impl<D: fmt::Debug, S: fmt::Debug> fmt::Display for PersistedPollError<D, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistedPollError::Device(e) => write!(f, "device error {e:?}"),
            PersistedPollError::SeqStore(e) => write!(
                f,
                "could not persist the sequence number ({e:?}); the event is held until the \
                 store works again — check the flash"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::serial_before;

    #[test]
    fn serial_order_survives_the_wrap() {
        assert!(serial_before(u32::MAX, 0));
        assert!(serial_before(u32::MAX - 5, 3));
        assert!(!serial_before(3, u32::MAX - 5));
        assert!(!serial_before(7, 7));
    }
}

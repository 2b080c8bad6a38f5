//! Sequence numbers across resets (protocol/SPEC.md §5): a device with storage never reuses a
//! number after a reset — even one right before a store — writes its store once per block, and
//! does not send a number beyond the persisted block when the store fails.

mod common;

use common::{NoLed, ScriptedPin};
use eldergate_firmware::button::{AlarmButton, Timing};
use eldergate_firmware::link::{Outbox, OutboxError};
use eldergate_firmware::reader::{CardSource, Display, Message, Terminal};
use eldergate_firmware::seq::{
    MemorySeqStore, NoSeqStore, PersistedPollError, SeqAllocator, SimulatedWriteFailure,
    DEFAULT_SEQ_BLOCK,
};
use eldergate_protocol::serial::{decode, MAX_WIRE};
use std::collections::HashSet;

/// One boot of an alarm device: starts from what `store` holds, queues `events` alarms through
/// the outbox (each acked at once) and returns the numbers they got. Dropping everything at the
/// end is the reset; only `store` survives it.
fn boot(store: &mut MemorySeqStore, fresh: u32, block: u32, events: usize) -> Vec<u32> {
    let mut seqs = SeqAllocator::start(&mut *store, fresh, block).unwrap();
    let mut outbox = Outbox::<4>::new(seqs.first_seq());
    (0..events)
        .map(|_| {
            let seq = outbox.push_persisted(1, 0, &mut seqs).unwrap();
            assert!(outbox.ack(seq));
            seq
        })
        .collect()
}

#[test]
fn a_number_is_never_reused_across_many_resets_at_any_point_of_a_block() {
    let mut store = MemorySeqStore::new();
    let mut seen = HashSet::new();
    let mut last = None;
    // Event counts per boot: nothing, exactly a block (the reset comes right before the store
    // the next event would need), one past it, one short of it, then pseudo-random counts.
    let mut counts = vec![0, 64, 65, 63, 1, 128, 0, 0, 2];
    let mut x: u32 = 0x2545_f491;
    for _ in 0..60 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        counts.push((x >> 24) as usize % 200);
    }
    for events in counts {
        for seq in boot(&mut store, 1_000, DEFAULT_SEQ_BLOCK, events) {
            assert!(seen.insert(seq), "seq {seq} reused");
            assert!(last.is_none_or(|l| seq > l), "seq {seq} not after {last:?}");
            last = Some(seq);
        }
    }
}

#[test]
fn a_reset_right_before_a_store_starts_at_the_stored_mark() {
    let mut store = MemorySeqStore::new();
    assert_eq!(boot(&mut store, 100, 4, 4), [100, 101, 102, 103]);
    assert_eq!(store.mark(), Some(104));
    // The block is used up; the device resets before the event that would store 108.
    assert_eq!(boot(&mut store, 100, 4, 1), [104]);
    // A reset mid-block leaves a gap instead of reusing 105..107.
    assert_eq!(boot(&mut store, 100, 4, 1), [108]);
}

#[test]
fn the_store_is_written_once_per_block_not_once_per_event_and_not_at_boot() {
    let mut store = MemorySeqStore::new();
    boot(&mut store, 0, DEFAULT_SEQ_BLOCK, 0);
    assert_eq!(store.writes(), 0, "a boot without events writes nothing");
    boot(&mut store, 0, DEFAULT_SEQ_BLOCK, 3 * 64);
    assert_eq!(store.writes(), 3);
    boot(&mut store, 0, DEFAULT_SEQ_BLOCK, 64 + 1);
    assert_eq!(store.writes(), 5);
}

#[test]
fn counting_across_the_u32_wrap_reuses_nothing() {
    let mut store = MemorySeqStore::new();
    let first = boot(&mut store, u32::MAX - 2, 4, 6);
    assert_eq!(first, [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2]);
    assert_eq!(boot(&mut store, 0, 4, 1), [5]);
}

#[test]
fn without_storage_the_device_starts_from_the_value_it_is_given() {
    let mut seqs = SeqAllocator::start(NoSeqStore, 0x5eed, DEFAULT_SEQ_BLOCK).unwrap();
    assert_eq!(seqs.first_seq(), 0x5eed);
    let mut outbox = Outbox::<2>::new(seqs.first_seq());
    assert_eq!(outbox.push_persisted(1, 0, &mut seqs), Ok(0x5eed));
}

#[test]
fn a_failing_store_is_reported_and_the_outbox_queues_nothing_beyond_the_block() {
    let mut store = MemorySeqStore::new();
    assert_eq!(boot(&mut store, 0, 2, 2), [0, 1]);
    let mut seqs = SeqAllocator::start(&mut store, 0, 2).unwrap();
    let mut outbox = Outbox::<4>::new(seqs.first_seq());
    assert_eq!(outbox.push_persisted(1, 0, &mut seqs), Ok(2));
    assert_eq!(outbox.push_persisted(1, 0, &mut seqs), Ok(3));
    seqs.store_mut().set_failing(true);
    assert_eq!(
        outbox.push_persisted(1, 0, &mut seqs),
        Err(PersistedPollError::SeqStore(SimulatedWriteFailure))
    );
    assert_eq!(outbox.next_seq(), 4, "4 is not persisted and not used");
    assert!(!seqs.is_reserved(4));
    seqs.store_mut().set_failing(false);
    assert_eq!(outbox.push_persisted(1, 0, &mut seqs), Ok(4));
    assert_eq!(seqs.mark(), 6);
    // A full outbox is reported as such, without touching the store.
    outbox.push_persisted(1, 0, &mut seqs).unwrap();
    let writes = seqs.store().writes();
    assert_eq!(
        outbox.push_persisted(1, 0, &mut seqs),
        Err(PersistedPollError::Device(OutboxError::Full))
    );
    assert_eq!(seqs.store().writes(), writes);
}

/// Polls the button every 10 ms over `from..to`, pressing it during `pressed`; returns the seqs
/// of the frames written and how many polls reported a store error.
fn run_button(
    dev: &mut AlarmButton<ScriptedPin, NoLed, 4>,
    pin: &ScriptedPin,
    seqs: &mut SeqAllocator<MemorySeqStore>,
    from: u64,
    to: u64,
    pressed: std::ops::Range<u64>,
) -> (Vec<u32>, usize) {
    let mut sent = Vec::new();
    let mut errors = 0;
    let mut out = [0u8; MAX_WIRE];
    for now in (from..to).step_by(10) {
        pin.set_pressed(pressed.contains(&now));
        match dev.poll_persisted(seqs, "btn-0003", now, &mut out) {
            Ok(Some(n)) => sent.push(decode(&mut out[..n - 1]).unwrap().seq),
            Ok(None) => {}
            Err(PersistedPollError::SeqStore(SimulatedWriteFailure)) => errors += 1,
            Err(PersistedPollError::Device(e)) => match e {},
        }
    }
    (sent, errors)
}

#[test]
fn a_button_holds_its_sos_while_the_store_fails_and_sends_it_once_the_store_works() {
    let pin = ScriptedPin::default();
    let mut seqs = SeqAllocator::start(MemorySeqStore::new(), 0, 2).unwrap();
    let mut dev: AlarmButton<_, _, 4> =
        AlarmButton::new(pin.clone(), NoLed, Timing::default(), seqs.first_seq());

    let (sent, errors) = run_button(&mut dev, &pin, &mut seqs, 0, 1_000, 0..100);
    assert_eq!((sent, errors), (vec![0], 0));
    dev.on_ack(0, 1_000);
    // Seq 1 is still inside the first block; it stays unacknowledged and is retransmitted.
    let (sent, _) = run_button(&mut dev, &pin, &mut seqs, 1_000, 2_000, 1_000..1_100);
    assert_eq!(sent, [1]);
    assert_eq!(seqs.store().writes(), 1);

    // Seq 2 needs a store, which fails: the SOS is held, 1 is still retransmitted.
    seqs.store_mut().set_failing(true);
    let (sent, errors) = run_button(&mut dev, &pin, &mut seqs, 2_000, 6_000, 2_000..2_100);
    assert!(dev.is_holding());
    assert!(
        errors > 300,
        "the failure is reported on every poll without a frame"
    );
    assert!(!sent.is_empty() && sent.iter().all(|&s| s == 1), "{sent:?}");

    seqs.store_mut().set_failing(false);
    let (sent, errors) = run_button(&mut dev, &pin, &mut seqs, 6_000, 6_020, 0..0);
    assert_eq!((sent, errors), (vec![2], 0));
    assert!(!dev.is_holding());
    assert_eq!(seqs.store().mark(), Some(4));
}

#[derive(Default)]
struct Screen(Vec<Message>);

impl Display for Screen {
    fn show_answer(&mut self, _: u8, _: &str, _: i32, _: i32, _: i32, _: i32) {}
    fn show_message(&mut self, m: Message) {
        self.0.push(m);
    }
}

struct OneCard(Option<[u8; 4]>);

impl CardSource for OneCard {
    type Error = ();
    fn read_uid(&mut self, uid: &mut [u8; 10]) -> Result<Option<usize>, ()> {
        Ok(self.0.take().map(|c| {
            uid[..4].copy_from_slice(&c);
            4
        }))
    }
}

#[test]
fn a_terminal_reads_no_card_until_the_number_of_its_tap_is_persisted() {
    let mut seqs = SeqAllocator::start(MemorySeqStore::new(), 500, DEFAULT_SEQ_BLOCK).unwrap();
    seqs.store_mut().set_failing(true);
    let mut terminal = Terminal::new(Screen::default(), seqs.first_seq());
    let mut card = OneCard(Some([1, 2, 3, 4]));
    let mut out = [0u8; MAX_WIRE];
    assert_eq!(
        terminal.poll_persisted(&mut card, &mut seqs, "rdr-01", 0, &mut out),
        Err(PersistedPollError::SeqStore(SimulatedWriteFailure))
    );
    assert!(card.0.is_some(), "the card was not read");
    seqs.store_mut().set_failing(false);
    let n = terminal
        .poll_persisted(&mut card, &mut seqs, "rdr-01", 10, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(decode(&mut out[..n - 1]).unwrap().seq, 500);
    assert_eq!(terminal.next_seq(), 501);
    assert_eq!(seqs.store().mark(), Some(564));
    assert_eq!(terminal.display().0, [Message::Processing]);
}

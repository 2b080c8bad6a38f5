//! Sequence numbers across resets (protocol/SPEC.md §5): a device with storage never reuses a
//! number after a reset — even one right before a store — and writes its store once per block.
//! When the store fails, the outbox's strict push and the terminal send nothing beyond the
//! persisted block, while the alarm button sends its alarm anyway (an alarm never waits).

mod common;
use common::OneCard;

use common::{ScriptedPin, SharedLed};
use eldergate_firmware::button::{AlarmButton, Timing};
use eldergate_firmware::link::{Outbox, OutboxError};
use eldergate_firmware::reader::{Display, Message, Terminal};
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

/// What the button did over a run of polls.
#[derive(Debug, Default)]
struct ButtonRun {
    /// (poll time, seq) of every frame written.
    sent: Vec<(u64, u32)>,
    /// Times of the polls that reported a store error.
    store_errors: Vec<u64>,
    /// How often the LED changed between consecutive polls.
    led_toggles: usize,
}

impl ButtonRun {
    fn seqs(&self) -> Vec<u32> {
        self.sent.iter().map(|&(_, seq)| seq).collect()
    }
}

/// A button on a fresh boot from `store` (block 2, so the store is needed every second event).
fn boot_button(
    store: MemorySeqStore,
) -> (
    AlarmButton<ScriptedPin, SharedLed, 4>,
    ScriptedPin,
    SharedLed,
    SeqAllocator<MemorySeqStore>,
) {
    let pin = ScriptedPin::default();
    let led = SharedLed::default();
    let seqs = SeqAllocator::start(store, 0, 2).unwrap();
    let dev = AlarmButton::new(
        pin.clone(),
        led.clone(),
        Timing::default(),
        seqs.first_seq(),
    );
    (dev, pin, led, seqs)
}

/// Polls the button every 10 ms over `from..to`, pressing it during `pressed`. Checks on every
/// poll that it made at most one store attempt.
fn run_button(
    dev: &mut AlarmButton<ScriptedPin, SharedLed, 4>,
    (pin, led): (&ScriptedPin, &SharedLed),
    seqs: &mut SeqAllocator<MemorySeqStore>,
    from: u64,
    to: u64,
    pressed: std::ops::Range<u64>,
) -> ButtonRun {
    let mut run = ButtonRun::default();
    let mut out = [0u8; MAX_WIRE];
    let mut lit = None;
    for now in (from..to).step_by(10) {
        pin.set_pressed(pressed.contains(&now));
        let attempts = seqs.store().attempts();
        let polled = match dev.poll_persisted(seqs, "btn-0003", now, &mut out) {
            Ok(polled) => polled,
            Err(e) => match e {},
        };
        assert!(
            seqs.store().attempts() - attempts <= 1,
            "more than one store attempt in the poll at {now} ms"
        );
        if let Some(n) = polled.frame {
            run.sent.push((now, decode(&mut out[..n - 1]).unwrap().seq));
        }
        if let Some(SimulatedWriteFailure) = polled.seq_store_error {
            run.store_errors.push(now);
        }
        if lit.is_some_and(|l| l != led.is_on()) {
            run.led_toggles += 1;
        }
        lit = Some(led.is_on());
    }
    run
}

#[test]
fn a_failing_store_never_holds_back_an_sos() {
    let (mut dev, pin, led, mut seqs) = boot_button(MemorySeqStore::new());
    let io = (&pin, &led);
    assert_eq!(
        run_button(&mut dev, io, &mut seqs, 0, 1_000, 0..100).seqs(),
        [0]
    );
    dev.on_ack(0, 1_000);
    // Seq 1 is still inside the first block: no store.
    assert_eq!(
        run_button(&mut dev, io, &mut seqs, 1_000, 2_000, 1_000..1_100).seqs(),
        [1]
    );
    dev.on_ack(1, 2_000);
    assert_eq!(seqs.store().writes(), 1);

    // Seq 2 needs a store, which fails: the SOS goes out in that very poll, with the error.
    seqs.store_mut().set_failing(true);
    let run = run_button(&mut dev, io, &mut seqs, 2_000, 2_540, 2_000..2_100);
    assert_eq!(
        run.sent,
        [(2_530, 2)],
        "sent once the double-press window passed"
    );
    assert_eq!(run.store_errors, [2_530]);
    assert!(dev.seq_store_failing());
    dev.on_ack(2, 2_540);

    // The link is fine (all acked), but the LED blinks fast while the store keeps failing; the
    // store is retried once a second and each failure is reported.
    let run = run_button(&mut dev, io, &mut seqs, 2_540, 4_540, 0..0);
    assert!(run.sent.is_empty() && !dev.outbox.failing());
    assert_eq!(run.store_errors, [3_530, 4_530]);
    assert!(
        run.led_toggles >= 15,
        "fast blink: {} toggles in 2 s",
        run.led_toggles
    );
    assert_eq!(seqs.store().mark(), Some(2), "nothing stored yet");

    // The store works again: the next retry stores a mark above every number sent meanwhile.
    seqs.store_mut().set_failing(false);
    let run = run_button(&mut dev, io, &mut seqs, 4_540, 5_540, 0..0);
    assert!(run.store_errors.is_empty());
    assert!(!dev.seq_store_failing());
    assert_eq!(seqs.store().mark(), Some(5));
    assert_eq!(seqs.store().writes(), 2);
    let run = run_button(&mut dev, io, &mut seqs, 5_540, 6_540, 0..0);
    assert_eq!(run.led_toggles, 0, "the fault has cleared");
    assert!(!led.is_on());
}

#[test]
fn a_failing_store_is_retried_once_a_second_not_on_every_poll() {
    let (mut dev, pin, led, mut seqs) = boot_button(MemorySeqStore::new());
    seqs.store_mut().set_failing(true);
    // Two SOS 5 s apart over 10 s of polls every 10 ms (1000 polls).
    let run = (0..2)
        .map(|i| {
            let from = i * 5_000;
            let run = run_button(
                &mut dev,
                (&pin, &led),
                &mut seqs,
                from,
                from + 5_000,
                from..from + 100,
            );
            dev.on_ack(i as u32, from + 5_000);
            run
        })
        .collect::<Vec<_>>();
    assert_eq!(run[0].sent.first(), Some(&(530, 0)));
    assert_eq!(run[1].sent.first(), Some(&(5_530, 1)));
    let attempts = seqs.store().attempts();
    assert!((9..=11).contains(&attempts), "{attempts} store attempts");
    assert_eq!(
        run[0].store_errors.len() + run[1].store_errors.len(),
        attempts as usize,
        "every failed attempt is reported"
    );
    assert_eq!(seqs.store().writes(), 0);
}

#[test]
fn a_reset_during_a_store_fault_may_reuse_a_number_a_reset_after_it_clears_does_not() {
    // The accepted cost of "an alarm never waits". Both boots send 0 and 1 (mark 2), then 2
    // while the store fails.
    let fault_then_reset = |recover: bool| {
        let (mut dev, pin, led, mut seqs) = boot_button(MemorySeqStore::new());
        let io = (&pin, &led);
        assert_eq!(
            run_button(&mut dev, io, &mut seqs, 0, 1_000, 0..100).seqs(),
            [0]
        );
        assert_eq!(
            run_button(&mut dev, io, &mut seqs, 1_000, 2_000, 1_000..1_100).seqs(),
            [0, 1]
        );
        seqs.store_mut().set_failing(true);
        let run = run_button(&mut dev, io, &mut seqs, 2_000, 2_540, 2_000..2_100);
        assert_eq!(run.sent.last(), Some(&(2_530, 2)));
        if recover {
            seqs.store_mut().set_failing(false);
            run_button(&mut dev, io, &mut seqs, 2_540, 3_540, 0..0);
            assert!(!dev.seq_store_failing());
        }
        // Reset: only the store survives.
        drop(dev);
        let store = seqs.release();
        boot_button(store).3.first_seq()
    };
    assert_eq!(fault_then_reset(true), 5, "above every number sent");
    assert_eq!(
        fault_then_reset(false),
        2,
        "2 is reused: the gateway would drop it as a duplicate for 24 h"
    );
}

#[derive(Default)]
struct Screen(Vec<Message>);

impl Display for Screen {
    fn show_answer(&mut self, _: u8, _: &str, _: i32, _: i32, _: i32, _: i32) {}
    fn show_message(&mut self, m: Message) {
        self.0.push(m);
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

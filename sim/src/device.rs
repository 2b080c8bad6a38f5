//! The simulated hardware around the real firmware: a button pin a "senior" presses, an LED
//! nobody watches, a coin cell that drains, a card in the reader's field, and a display that
//! records (and may print) what the senior would read.
//!
//! Everything here implements the traits `eldergate-firmware` is written against; the firmware
//! itself (`AlarmButton`, `Terminal`, `heartbeat_frame`) runs unchanged. A device given a
//! [`SeqAllocator`] over a [`FileSeqStore`] polls the firmware's `poll_persisted`, as a device
//! with flash does; without one it polls the plain `poll` and its numbers start anew each run.

use super::seq_file::{FileSeqStore, SeqFileError};
use eldergate_firmware::button::{
    coin_cell_percent, heartbeat_frame, AlarmButton, BatterySensor, Timing, SEQ_STORE_RETRY_MS,
};
use eldergate_firmware::reader::{CardSource, Display, Message, Terminal};
use eldergate_firmware::seq::{PersistedPollError, SeqAllocator};
use eldergate_protocol::serial::MAX_WIRE;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A button input driven by the simulation (pressed = low, as on the hardware).
#[derive(Clone, Default)]
pub struct ScriptedButton(Arc<AtomicBool>);

impl ScriptedButton {
    /// Holds the button down (true) or lets it go.
    pub fn set_pressed(&self, pressed: bool) {
        self.0.store(pressed, Ordering::Relaxed);
    }
}

impl embedded_hal::digital::ErrorType for ScriptedButton {
    type Error = Infallible;
}

impl embedded_hal::digital::InputPin for ScriptedButton {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.load(Ordering::Relaxed))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

/// An LED nobody looks at.
pub struct NoLed;

impl embedded_hal::digital::ErrorType for NoLed {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A 3 V lithium coin cell that loses `drain_mv` with every heartbeat (the radio burst is what
/// drains it), never below 2.0 V (0 %).
#[derive(Debug, Clone, Copy)]
pub struct DrainingCoinCell {
    /// Voltage now, millivolts.
    pub millivolts: u16,
    /// Lost per heartbeat, millivolts.
    pub drain_mv: u16,
}

impl DrainingCoinCell {
    /// Charge now, percent (the firmware's own estimate).
    pub fn percent(&self) -> u8 {
        coin_cell_percent(self.millivolts)
    }
}

impl BatterySensor for DrainingCoinCell {
    type Error = Infallible;
    fn millivolts(&mut self) -> Result<u16, Infallible> {
        let now = self.millivolts;
        self.millivolts = now.saturating_sub(self.drain_mv).max(2_000);
        Ok(now)
    }
}

/// A mains-powered device (a card reader): no battery to measure, so the heartbeat says
/// "unknown" (battery_pct 255 on the serial link, no battery fields over MQTT).
pub struct MainsPower;

/// Why [`MainsPower`] has no reading.
#[derive(Debug)]
pub struct NoBattery;

impl BatterySensor for MainsPower {
    type Error = NoBattery;
    fn millivolts(&mut self) -> Result<u16, NoBattery> {
        Err(NoBattery)
    }
}

/// When a device sends its next heartbeat, and with which sequence number. Heartbeats are never
/// acked or retransmitted (SPEC.md §5), so they have their own counter.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatClock {
    /// Milliseconds between heartbeats; 0 = none.
    pub every_ms: u64,
    /// When the next one is due.
    pub next_ms: u64,
    /// Its sequence number.
    pub seq: u32,
}

impl HeartbeatClock {
    /// True (and advances) when a heartbeat is due at `now_ms`.
    fn due(&mut self, now_ms: u64) -> bool {
        if self.every_ms == 0 || now_ms < self.next_ms {
            return false;
        }
        self.next_ms = now_ms + self.every_ms;
        self.seq = self.seq.wrapping_add(1);
        true
    }
}

/// What one poll of a simulated device did: a frame to send, and a failed store of its
/// sequence-number mark (both can happen in one poll: an alarm is sent anyway).
#[derive(Debug, Default)]
pub(crate) struct DevicePoll {
    /// The length of the frame written into `out`.
    pub frame: Option<usize>,
    /// The store of the sequence-number mark failed in this poll.
    pub seq_store_error: Option<SeqFileError>,
}

impl DevicePoll {
    fn frame(frame: Option<usize>) -> Self {
        DevicePoll {
            frame,
            seq_store_error: None,
        }
    }
}

/// One simulated alarm button: its id, its pin, its battery, and the firmware.
pub struct SimButton {
    /// Device id.
    pub id: String,
    /// The pin the simulation presses.
    pub pin: ScriptedButton,
    /// The firmware.
    pub firmware: AlarmButton<ScriptedButton, NoLed, 8>,
    /// Its coin cell.
    pub battery: DrainingCoinCell,
    /// Its heartbeat schedule.
    pub heartbeat: HeartbeatClock,
    /// Its persisted sequence numbers; None: nothing kept across runs.
    seqs: Option<SeqAllocator<FileSeqStore>>,
}

impl SimButton {
    /// A button whose first event gets `first_seq`, with a fresh battery and no heartbeats.
    pub fn new(id: &str, first_seq: u32) -> SimButton {
        let pin = ScriptedButton::default();
        SimButton {
            id: id.into(),
            firmware: AlarmButton::new(pin.clone(), NoLed, Timing::default(), first_seq),
            pin,
            battery: DrainingCoinCell {
                millivolts: 3_000,
                drain_mv: 1,
            },
            heartbeat: HeartbeatClock {
                every_ms: 0,
                next_ms: 0,
                seq: 0,
            },
            seqs: None,
        }
    }

    /// A button that keeps its sequence numbers in `seqs` (it starts at `seqs.first_seq()`).
    pub fn persisted(id: &str, seqs: SeqAllocator<FileSeqStore>) -> SimButton {
        let mut button = SimButton::new(id, seqs.first_seq());
        button.seqs = Some(seqs);
        button
    }

    /// Its persisted sequence numbers, if it keeps them.
    pub fn seqs(&self) -> Option<&SeqAllocator<FileSeqStore>> {
        self.seqs.as_ref()
    }

    /// True from a failed store of its mark until a later one succeeds.
    pub fn seq_store_failing(&self) -> bool {
        self.firmware.seq_store_failing()
    }

    /// The same button sending a heartbeat every `every_ms`, the first at `first_ms`.
    pub fn with_heartbeat(mut self, every_ms: u64, first_ms: u64) -> SimButton {
        self.heartbeat.every_ms = every_ms;
        self.heartbeat.next_ms = first_ms;
        self
    }

    /// The same button with `battery`.
    pub fn with_battery(mut self, battery: DrainingCoinCell) -> SimButton {
        self.battery = battery;
        self
    }

    /// Runs the firmware once: a heartbeat frame if one is due, else whatever the button wants
    /// to send (a new event or a retransmission).
    pub(crate) fn poll(&mut self, now_ms: u64, out: &mut [u8; MAX_WIRE]) -> DevicePoll {
        if self.heartbeat.due(now_ms) {
            if let Some(n) = heartbeat_frame(&self.id, self.heartbeat.seq, &mut self.battery, out) {
                return DevicePoll::frame(Some(n));
            }
        }
        // The scripted pin cannot fail (its error type is Infallible).
        match &mut self.seqs {
            None => DevicePoll::frame(self.firmware.poll(&self.id, now_ms, out).ok().flatten()),
            Some(seqs) => match self.firmware.poll_persisted(seqs, &self.id, now_ms, out) {
                Ok(p) => DevicePoll {
                    frame: p.frame,
                    seq_store_error: p.seq_store_error,
                },
                Err(never) => match never {},
            },
        }
    }
}

/// Cards held to the reader: each queued UID is in the field for one read.
#[derive(Clone, Default)]
pub struct CardsAtReader(Arc<Mutex<VecDeque<Vec<u8>>>>);

impl CardsAtReader {
    /// A resident holds the card with this UID to the reader (it is read when the terminal is
    /// ready for the next tap).
    pub fn hold(&self, uid: Vec<u8>) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(uid);
        }
    }

    /// Cards still waiting to be read.
    pub fn waiting(&self) -> usize {
        self.0.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl CardSource for CardsAtReader {
    type Error = Infallible;
    fn read_uid(&mut self, uid: &mut [u8; 10]) -> Result<Option<usize>, Infallible> {
        let Some(card) = self.0.lock().ok().and_then(|mut q| q.pop_front()) else {
            return Ok(None);
        };
        let n = card.len().min(uid.len());
        uid[..n].copy_from_slice(&card[..n]);
        Ok(Some(n))
    }
}

/// Parses a card id as printed in the roster (`1DDCCF2D`, hex, 4–10 bytes) into its UID bytes.
/// None for anything else (bad roster rows are counted by the caller, never a panic).
pub fn card_uid(card_id: &str) -> Option<Vec<u8>> {
    let s = card_id.trim();
    if s.len() % 2 != 0 || !(8..=20).contains(&s.len()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Yuan from integer fen, e.g. `-1350` → `-13.50` (no floats for money).
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// One thing a reader's display showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The reader.
    pub reader: String,
    /// The DISPLAY result code (SPEC.md §4) for an answer; None for a fixed message.
    pub result: Option<u8>,
    /// The balance shown, fen, for an answer that shows one (None for an unknown or lost card
    /// and a refusal without a name).
    pub balance_fen: Option<i64>,
    /// The text on the screen.
    pub text: String,
}

/// Everything the simulated readers' displays showed, shared with whoever watches.
#[derive(Clone, Default)]
pub struct DisplayLog(Arc<Mutex<Vec<Shown>>>);

impl DisplayLog {
    /// Everything shown so far.
    pub fn all(&self) -> Vec<Shown> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn push(&self, shown: Shown) {
        if let Ok(mut v) = self.0.lock() {
            v.push(shown);
        }
    }
}

/// Whether a DISPLAY result shows a balance (SPEC.md §6.4, MQTT.md): never for an unknown or a
/// lost card (a found card must not reveal one), nor for a refusal without a name (the gateway
/// could not tell whose card it was); the balance of 0 those carry means "not shown".
pub fn shows_balance(result: u8, name: &str) -> bool {
    match result {
        1 | 2 => false,
        0 | 3..=5 => true,
        _ => !name.is_empty(),
    }
}

/// The text a senior reads for a settlement answer (amounts in yuan from integer fen); "—" where
/// a result shows no balance, never a made-up ¥0.00.
pub fn answer_text(
    result: u8,
    name: &str,
    price: i32,
    subsidy: i32,
    payable: i32,
    balance: i32,
) -> String {
    let y = |fen: i32| yuan(i64::from(fen));
    let who = if name.is_empty() { "" } else { name };
    let bal = if shows_balance(result, name) {
        format!("¥{}", y(balance))
    } else {
        "—".to_string()
    };
    match result {
        0 => format!(
            "{who} 支付成功 paid: 价格 price ¥{} − 补贴 subsidy ¥{} = 实付 payable ¥{}; 余额 balance {bal}",
            y(price),
            y(subsidy),
            y(payable),
        ),
        1 => format!("未登记的卡，请联系工作人员 (unknown card: ask the staff); 余额 balance {bal}"),
        2 => format!("{who} 此卡已挂失 (card reported lost); 余额 balance {bal}"),
        3 => format!("现在不是供餐时间 (outside the meal periods); 余额 balance {bal}"),
        4 => format!(
            "{who} 余额不足 insufficient balance: 实付 payable ¥{}, 余额 balance {bal}",
            y(payable),
        ),
        5 => format!("请重试 / 本餐未定价 (try again: no price for this meal); 余额 balance {bal}"),
        // 6, and a code this display does not know, which it shows like 6 (SPEC.md §6.4).
        other => format!(
            "{who} 请联系工作人员 (refused: please see staff, result {other}); 余额 balance {bal}"
        ),
    }
}

/// A display that records what it shows in a [`DisplayLog`] and, when `print` is set, prints it
/// (the demo).
pub struct RecordingDisplay {
    reader: String,
    log: DisplayLog,
    print: bool,
}

impl RecordingDisplay {
    fn record(&self, result: Option<u8>, balance_fen: Option<i64>, text: String) {
        if self.print {
            println!("[display {:<6}] {text}", self.reader);
        }
        self.log.push(Shown {
            reader: self.reader.clone(),
            result,
            balance_fen,
            text,
        });
    }
}

impl Display for RecordingDisplay {
    fn show_answer(
        &mut self,
        result: u8,
        name: &str,
        price: i32,
        subsidy: i32,
        payable: i32,
        balance: i32,
    ) {
        let text = answer_text(result, name, price, subsidy, payable, balance);
        let shown = shows_balance(result, name).then_some(i64::from(balance));
        self.record(Some(result), shown, text);
    }

    fn show_message(&mut self, message: Message) {
        match message {
            // "Processing…" flashes on every tap; only the outcome is worth recording.
            Message::Processing => {}
            Message::Timeout => self.record(
                None,
                None,
                "网络超时，请重新刷卡 (no answer in time: tap again)".into(),
            ),
        }
    }
}

/// One simulated card reader: its id, the cards held to it, and the firmware terminal.
pub struct SimReader {
    /// Device id.
    pub id: String,
    /// Where the simulation holds cards.
    pub cards: CardsAtReader,
    /// The firmware.
    pub terminal: Terminal<RecordingDisplay>,
    /// Its heartbeat schedule.
    pub heartbeat: HeartbeatClock,
    /// The price the counter staff type before every tap, fen.
    pub counter_price_fen: Option<i32>,
    /// Its persisted sequence numbers; None: nothing kept across runs.
    seqs: Option<SeqAllocator<FileSeqStore>>,
    /// After a failed store, the terminal is not polled (so no card is read) before this time:
    /// a broken disk is retried once per [`SEQ_STORE_RETRY_MS`], as the button does.
    seq_retry_at: u64,
}

impl SimReader {
    /// A reader whose first tap gets `first_seq`; its display records into `log` (and prints
    /// when `print`).
    pub fn new(id: &str, first_seq: u32, log: DisplayLog, print: bool) -> SimReader {
        let display = RecordingDisplay {
            reader: id.into(),
            log,
            print,
        };
        SimReader {
            id: id.into(),
            cards: CardsAtReader::default(),
            terminal: Terminal::new(display, first_seq),
            heartbeat: HeartbeatClock {
                every_ms: 0,
                next_ms: 0,
                seq: 0,
            },
            counter_price_fen: None,
            seqs: None,
            seq_retry_at: 0,
        }
    }

    /// A reader that keeps its sequence numbers in `seqs` (it starts at `seqs.first_seq()`).
    pub fn persisted(
        id: &str,
        seqs: SeqAllocator<FileSeqStore>,
        log: DisplayLog,
        print: bool,
    ) -> SimReader {
        let mut reader = SimReader::new(id, seqs.first_seq(), log, print);
        reader.seqs = Some(seqs);
        reader
    }

    /// Its persisted sequence numbers, if it keeps them.
    pub fn seqs(&self) -> Option<&SeqAllocator<FileSeqStore>> {
        self.seqs.as_ref()
    }

    /// True from a failed store of its mark until a later one succeeds (meanwhile no card is
    /// read).
    pub fn seq_store_failing(&self) -> bool {
        self.seq_retry_at > 0
    }

    /// The same reader sending a heartbeat every `every_ms`, the first at `first_ms`.
    pub fn with_heartbeat(mut self, every_ms: u64, first_ms: u64) -> SimReader {
        self.heartbeat.every_ms = every_ms;
        self.heartbeat.next_ms = first_ms;
        self
    }

    /// The same reader at a counter where staff type `price_fen` before every tap.
    pub fn with_counter_price(mut self, price_fen: Option<i32>) -> SimReader {
        self.counter_price_fen = price_fen;
        self
    }

    /// Runs the firmware once: a heartbeat if due, else a CARD_TAP frame for a card in the field.
    /// A reader that keeps its numbers reads no card until the number of its tap is persisted
    /// (the terminal's strict rule: the tap waits).
    pub(crate) fn poll(&mut self, now_ms: u64, out: &mut [u8; MAX_WIRE]) -> DevicePoll {
        if self.heartbeat.due(now_ms) {
            if let Some(n) = heartbeat_frame(&self.id, self.heartbeat.seq, &mut MainsPower, out) {
                return DevicePoll::frame(Some(n));
            }
        }
        if self.terminal.entered_price().is_none() {
            self.terminal.enter_price(self.counter_price_fen);
        }
        let Some(seqs) = &mut self.seqs else {
            // The simulated card source cannot fail (its error type is Infallible).
            return DevicePoll::frame(
                self.terminal
                    .poll(&mut self.cards, &self.id, now_ms, out)
                    .ok()
                    .flatten(),
            );
        };
        if now_ms < self.seq_retry_at {
            return DevicePoll::default();
        }
        match self
            .terminal
            .poll_persisted(&mut self.cards, seqs, &self.id, now_ms, out)
        {
            Ok(frame) => {
                // Not waiting on a tap, so the number of the next one was reserved just now.
                self.seq_retry_at = 0;
                DevicePoll::frame(frame)
            }
            Err(PersistedPollError::SeqStore(e)) => {
                self.seq_retry_at = now_ms.saturating_add(SEQ_STORE_RETRY_MS);
                DevicePoll {
                    frame: None,
                    seq_store_error: Some(e),
                }
            }
            Err(PersistedPollError::Device(never)) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_shown_in_yuan_from_integer_fen() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(1350), "13.50");
        assert_eq!(yuan(-1350), "-13.50");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn roster_card_ids_become_uids_and_bad_ones_are_refused() {
        assert_eq!(card_uid("1DDCCF2D"), Some(vec![0x1D, 0xDC, 0xCF, 0x2D]));
        assert_eq!(card_uid("ca000001"), Some(vec![0xCA, 0, 0, 1]));
        assert_eq!(card_uid("1DDCCF2"), None);
        assert_eq!(card_uid("1DDCCF"), None, "shorter than 4 bytes");
        assert_eq!(card_uid("ZZDCCF2D"), None);
        assert_eq!(card_uid("张三李四"), None);
        assert_eq!(card_uid(&"AB".repeat(11)), None, "longer than 10 bytes");
    }

    #[test]
    fn a_coin_cell_drains_with_every_heartbeat_and_stops_at_empty() {
        let mut cell = DrainingCoinCell {
            millivolts: 2_015,
            drain_mv: 10,
        };
        assert_eq!(cell.millivolts().ok(), Some(2_015));
        assert_eq!(cell.millivolts().ok(), Some(2_005));
        assert_eq!(cell.millivolts().ok(), Some(2_000));
        assert_eq!(cell.millivolts().ok(), Some(2_000));
        assert_eq!(cell.percent(), 0);
    }

    #[test]
    fn the_display_shows_payment_and_refusals_as_the_senior_reads_them() {
        let paid = answer_text(0, "张*华", 1500, 150, 1350, 8650);
        assert!(paid.contains("张*华") && paid.contains("¥13.50") && paid.contains("¥86.50"));
        assert!(answer_text(4, "张*华", 1500, 0, 1500, 200).contains("余额不足"));
        assert!(answer_text(3, "", 0, 0, 0, 0).contains("outside the meal periods"));
    }

    #[test]
    fn results_that_show_no_balance_print_a_dash_not_zero_yuan() {
        for (result, name) in [(1, ""), (2, "张*华"), (6, "")] {
            let text = answer_text(result, name, 0, 0, 0, 0);
            assert!(
                text.contains("balance —") && !text.contains("¥0.00"),
                "{text}"
            );
            assert!(!shows_balance(result, name));
        }
        let refused = answer_text(6, "张*华", 0, 0, 0, 2000);
        assert!(refused.contains("please see staff") && refused.contains("¥20.00"));
        assert!(answer_text(9, "张*华", 0, 0, 0, 0).contains("please see staff, result 9"));
    }
}

//! The card-reader terminal: tap → CARD_TAP frame; DISPLAY with the same seq is shown; a
//! timeout message when no answer comes.

use eldergate_firmware::reader::{Display, Message, Terminal, ANSWER_TIMEOUT_MS};
use eldergate_protocol::serial::{decode, Body, Frame, MAX_WIRE};

mod common;
use common::OneCard;

#[derive(Default)]
struct Screen {
    shown: Vec<String>,
}

impl Display for Screen {
    fn show_answer(
        &mut self,
        result: u8,
        name: &str,
        price: i32,
        subsidy: i32,
        payable: i32,
        balance: i32,
    ) {
        self.shown.push(format!(
            "{result} {name} {price} {subsidy} {payable} {balance}"
        ));
    }
    fn show_message(&mut self, m: Message) {
        self.shown.push(format!("{m:?}"));
    }
}

#[test]
fn a_tap_is_sent_and_the_matching_answer_is_shown() {
    let mut t = Terminal::new(Screen::default(), 7);
    let mut cards = OneCard(Some([0x1d, 0xdc, 0xcf, 0x2d]));
    let mut out = [0u8; MAX_WIRE];
    let n = t.poll(&mut cards, "rdr-01", 0, &mut out).unwrap().unwrap();
    let mut w = out;
    let f = decode(&mut w[..n - 1]).unwrap();
    assert_eq!(f.seq, 7);
    assert_eq!(
        f.body,
        Body::CardTap {
            uid: &[0x1d, 0xdc, 0xcf, 0x2d],
            mac: &[],
            price: None
        }
    );
    // An answer for another tap is ignored; the matching one is shown.
    let answer = |seq| Frame {
        device: "rdr-01",
        seq,
        body: Body::Display {
            result: 0,
            name: "张*华",
            price: 1500,
            subsidy: 150,
            payable: 1350,
            balance: 8650,
        },
    };
    t.on_frame(&answer(6));
    t.on_frame(&answer(7));
    assert_eq!(
        t.display().shown,
        ["Processing", "0 张*华 1500 150 1350 8650"]
    );
}

#[test]
fn no_answer_in_time_shows_a_timeout() {
    let mut t = Terminal::new(Screen::default(), 1);
    let mut cards = OneCard(Some([1, 2, 3, 4]));
    let mut out = [0u8; MAX_WIRE];
    t.poll(&mut cards, "rdr-01", 0, &mut out).unwrap();
    t.poll(&mut cards, "rdr-01", ANSWER_TIMEOUT_MS, &mut out)
        .unwrap();
    assert_eq!(t.display().shown, ["Processing", "Timeout"]);
}

#[test]
fn a_price_typed_at_the_counter_goes_with_the_next_tap_only() {
    let mut t = Terminal::new(Screen::default(), 1);
    let mut out = [0u8; MAX_WIRE];
    t.enter_price(Some(1580));
    let n = t
        .poll(&mut OneCard(Some([1, 2, 3, 4])), "rdr-01", 0, &mut out)
        .unwrap()
        .unwrap();
    let mut w = out;
    let f = decode(&mut w[..n - 1]).unwrap();
    assert!(
        matches!(
            f.body,
            Body::CardTap {
                price: Some(1580),
                ..
            }
        ),
        "{f:?}"
    );
    assert_eq!(t.entered_price(), None, "cleared once sent");
    // The next resident's tap (after the answer timed out) carries no price of its own.
    let n = t
        .poll(&mut OneCard(None), "rdr-01", ANSWER_TIMEOUT_MS, &mut out)
        .unwrap();
    assert_eq!(n, None);
    let n = t
        .poll(
            &mut OneCard(Some([5, 6, 7, 8])),
            "rdr-01",
            ANSWER_TIMEOUT_MS + 10,
            &mut out,
        )
        .unwrap()
        .unwrap();
    let mut w = out;
    let f = decode(&mut w[..n - 1]).unwrap();
    assert!(matches!(f.body, Body::CardTap { price: None, .. }), "{f:?}");
}

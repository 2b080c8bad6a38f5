//! Card taps over a real pty, read from SPEC.md §6.4 and docs/CANTEEN.md "Card MAC": a tap the
//! gateway refuses (a price above `limits.max_price_fen`, a card MAC that does not match) gets a
//! DISPLAY with result 6 on the wire — never silence, never another resident's data — its
//! retransmission gets the same DISPLAY, and a genuine MAC settles.

mod common;

use common::canteen_spec;
use eldergate::canteen::mac::SiteSecret;
use eldergate_e2e::*;
use eldergate_protocol::serial::{decode, encode, Body, Frame, FrameReader, Push, MAX_WIRE};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &[u8] = b"the site secret of the serial test";

/// The API client (the console work puts it behind login: switch it here).
fn api(gw: &Gateway) -> reqwest::Client {
    gw.api()
}

/// Sends `frame` and returns the gateway's reply to its (device, seq): (type, body fields).
async fn exchange(
    port: &mut SerialStream,
    reader: &mut FrameReader,
    frame: &Frame<'_>,
    wait: Duration,
) -> Option<(u8, String, [i32; 4])> {
    let mut out = [0u8; MAX_WIRE];
    let n = encode(frame, &mut out).expect("encode");
    port.write_all(&out[..n]).await.expect("write");
    let deadline = tokio::time::Instant::now() + wait;
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout_at(deadline, port.read(&mut byte))
            .await
            .ok()?
        {
            Ok(n) if n > 0 => {}
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        if let Push::Frame(wire) = reader.push(byte[0]) {
            let mut b = wire.to_vec();
            let Ok(f) = decode(&mut b) else { continue };
            if f.device != frame.device || f.seq != frame.seq {
                continue;
            }
            return Some(match f.body {
                Body::Display {
                    result,
                    name,
                    price,
                    subsidy,
                    payable,
                    balance,
                } => (result, name.to_string(), [price, subsidy, payable, balance]),
                Body::Ack => (0xff, String::new(), [0; 4]),
                Body::Nak { reason } => (0xf0 | reason, String::new(), [0; 4]),
                _ => (0xee, String::new(), [0; 4]),
            });
        }
    }
}

fn tap<'a>(seq: u32, uid: &'a [u8], mac: &'a [u8], price: Option<i32>) -> Frame<'a> {
    Frame {
        device: "rdr-01",
        seq,
        body: Body::CardTap { uid, mac, price },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tap_gets_display_6_on_the_wire_and_a_genuine_mac_settles() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyTAP");
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let secret_file = dir.path().join("card-mac.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let serial = format!("[[serial]]\nport = \"{}\"\n", link.display());
    let mut spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 2, 0, &serial);
    spec.extra.push_str(&format!(
        "card_mac_secret_file = \"{}\"\n",
        secret_file.display()
    ));
    let gw = Gateway::start(&spec).await.unwrap();
    let http = api(&gw);
    let r = http
        .post(gw.url("/api/residents/R00001/topup"))
        .json(&serde_json::json!({"amount_fen": 5000, "by": "S013", "method": "cash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut port = plug_pty(&link).unwrap();
    let mut reader = FrameReader::new();
    let card = [0xCA, 0x00, 0x00, 0x01];
    // The gateway opens the port within its reopen backoff: the first tap (an absurd price)
    // is resent until it is answered.
    let mut first = None;
    for _ in 0..30 {
        first = exchange(
            &mut port,
            &mut reader,
            &tap(1, &card, &[], Some(i32::MAX)),
            Duration::from_secs(1),
        )
        .await;
        if first.is_some() {
            break;
        }
    }
    let (result, name, amounts) = first.expect("the gateway answered on the pty");
    assert_eq!(result, 6, "a price above the limit is refused: DISPLAY 6");
    assert_eq!(name, "张*1", "the holder, masked");
    assert_eq!(
        amounts,
        [0, 0, 0, 5000],
        "nothing charged, the current balance"
    );
    let again = exchange(
        &mut port,
        &mut reader,
        &tap(1, &card, &[], Some(i32::MAX)),
        WAIT,
    )
    .await
    .expect("answered again");
    assert_eq!(
        again,
        (result, name, amounts),
        "a retransmission, the same DISPLAY"
    );

    // A forged MAC: refused as a cloned card, showing neither a name nor a balance.
    let forged = exchange(
        &mut port,
        &mut reader,
        &tap(2, &card, &[0u8; 8], None),
        WAIT,
    )
    .await
    .expect("answered");
    assert_eq!(forged, (6, String::new(), [0, 0, 0, 0]));
    // A MAC of the right card and key but for another seq (a replay): refused too.
    let s = SiteSecret::new(SECRET.to_vec()).unwrap();
    let replay = s.tap_mac("rdr-01", 2, "CA000001");
    let replayed = exchange(&mut port, &mut reader, &tap(3, &card, &replay, None), WAIT)
        .await
        .expect("answered");
    assert_eq!(replayed.0, 6);
    // The genuine MAC of this tap settles: ¥15.00 less 10 % for 60+.
    let genuine = s.tap_mac("rdr-01", 4, "CA000001");
    let paid = exchange(&mut port, &mut reader, &tap(4, &card, &genuine, None), WAIT)
        .await
        .expect("answered");
    assert_eq!(paid, (0, "张*1".into(), [1500, 150, 1350, 3650]));
    // The refusals are on the manager's day close, by reason.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date();
    let day: serde_json::Value = http
        .get(gw.url(&format!("/api/reports/daily?date={today}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refusals = &day["close"]["refusals"];
    assert_eq!(refusals["reason:card_mac_mismatch"], 2, "{day:#}");
    assert_eq!(refusals["reason:price_too_high"], 1, "{day:#}");
    assert_eq!(refusals["result:refused"], 3, "{day:#}");
    assert_eq!(day["close"]["topups_by_method"]["cash"]["amount_fen"], 5000);
    drop(gw);
    db.drop_db().await;
}

//! Serial ingest over real pty pairs: noise, truncation and concatenation never produce a false
//! event and never lose a clean frame; a port that disappears and comes back (USB unplug) is
//! reopened; a device that keeps retransmitting survives a gateway kill.

use eldergate_e2e::*;
use eldergate_protocol::serial::{decode, encode, Body, Frame, FrameReader, Push, MAX_WIRE};
use rand::Rng;
use sqlx::Row;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

const WAIT: Duration = Duration::from_secs(60);

/// A pty pair whose slave is reachable through a stable symlink, like /dev/serial/by-id/…;
/// dropping it removes the link before the pty (see [`PluggedPty`]).
fn plug(link: &Path) -> PluggedPty {
    plug_pty(link).expect("a pty pair linked")
}

fn alarm(device: &str, seq: u32) -> Vec<u8> {
    let mut out = [0u8; MAX_WIRE];
    let n = encode(
        &Frame {
            device,
            seq,
            body: Body::Alarm { action: 1 },
        },
        &mut out,
    )
    .unwrap();
    out[..n].to_vec()
}

/// Sends `frames` (retransmitting the unacked ones with fresh noise around them) until every one
/// is acked; returns the acks seen.
async fn send_until_acked(
    master: &mut SerialStream,
    frames: &[(String, u32)],
    noisy: bool,
) -> HashSet<(String, u32)> {
    let mut acked = HashSet::new();
    let mut reader = FrameReader::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.len() < frames.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} acked",
            acked.len(),
            frames.len()
        );
        let mut burst = Vec::new();
        for (d, s) in frames.iter().filter(|f| !acked.contains(*f)) {
            let good = alarm(d, *s);
            if noisy {
                let mut rng = rand::rng();
                match rng.random_range(0..5) {
                    // random garbage, possibly with delimiters
                    0 => burst.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>())),
                    // a truncated frame, then its delimiter
                    1 => {
                        burst.extend_from_slice(&good[..good.len() / 2]);
                        burst.push(0);
                    }
                    // a corrupted copy (CRC error)
                    2 => {
                        let mut bad = good.clone();
                        let i = rng.random_range(1..bad.len() - 1);
                        bad[i] ^= 0x10;
                        if bad[i] == 0 {
                            bad[i] = 0x33;
                        }
                        burst.extend_from_slice(&bad);
                    }
                    _ => {}
                }
            }
            burst.extend_from_slice(&good);
        }
        // Nobody reads the port while the gateway is down: a full pty buffer blocks the write,
        // which for a real UART would just be lost bytes. Give up on this burst after a while.
        let _ = tokio::time::timeout(Duration::from_millis(500), master.write_all(&burst)).await;
        // Read acks for a while, then retransmit what is missing.
        let until = tokio::time::Instant::now() + Duration::from_millis(700);
        let mut buf = [0u8; 1024];
        while let Ok(r) = tokio::time::timeout_at(until, master.read(&mut buf)).await {
            let n = match r {
                Ok(n) if n > 0 => n,
                // The other side is closed (gateway down): wait instead of spinning.
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            for &b in &buf[..n] {
                if let Push::Frame(w) = reader.push(b) {
                    if let Ok(Frame {
                        device,
                        seq,
                        body: Body::Ack,
                    }) = decode(w)
                    {
                        acked.insert((device.to_string(), seq));
                    }
                }
            }
        }
    }
    acked
}

async fn gateway(dir: &Path, buttons: usize) -> (Mosquitto, TestDb, Gateway, PathBuf) {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let link = dir.join("ttyUSB-eldergate");
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), buttons);
    spec.extra = format!("[[serial]]\nport = \"{}\"\nbaud = 115200\n", link.display());
    spec.serial = true;
    (broker, db, Gateway::start(&spec).await.unwrap(), link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_link_loses_no_clean_frame_and_invents_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-eldergate");
    let mut master = plug(&link);
    let (_broker, db, gw, _) = gateway(dir.path(), 5).await;
    let frames: Vec<(String, u32)> = (1..=5)
        .flat_map(|d| (1..=6).map(move |s| (button(d), s)))
        .collect();
    let acked = send_until_acked(&mut master, &frames, true).await;
    assert_eq!(acked.len(), 30);
    // Two frames back to back in one write are two frames.
    let mut two = alarm("btn-0001", 7);
    two.extend(alarm("btn-0002", 7));
    master.write_all(&two).await.unwrap();
    let all: Vec<(String, u32)> = frames
        .iter()
        .cloned()
        .chain([("btn-0001".into(), 7), ("btn-0002".into(), 7)])
        .collect();
    send_until_acked(&mut master, &all, false).await;

    let journal = gw.journal().await.unwrap();
    let rows = sqlx::query("SELECT device_id, device_seq FROM events WHERE kind = 'alarm_press'")
        .fetch_all(&journal)
        .await
        .unwrap();
    let got: HashSet<(String, u32)> = rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) as u32))
        .collect();
    assert_eq!(rows.len(), got.len(), "an event was journaled twice");
    assert_eq!(
        got,
        all.into_iter().collect::<HashSet<_>>(),
        "exactly the clean frames, nothing invented"
    );
    assert!(
        gw.metric("eldergate_serial_crc_errors_total")
            .await
            .unwrap()
            + gw.metric("eldergate_serial_resyncs_total").await.unwrap()
            > 0.0
    );
    // A well-formed frame from an unknown device is a dead letter (and gets a NAK).
    master.write_all(&alarm("btn-9999", 1)).await.unwrap();
    let reason: String = eventually(WAIT, "a dead letter", || async {
        let row = sqlx::query("SELECT reason FROM dead_letters WHERE source LIKE 'serial:%' AND reason = 'unknown_device'")
            .fetch_optional(&journal)
            .await?;
        Ok(row.map(|r| r.get(0)))
    })
    .await
    .unwrap();
    assert_eq!(reason, "unknown_device");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_port_is_reopened_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-eldergate");
    // Plugged in after the gateway started: a child process inherits open descriptors, and a
    // gateway holding the pty master would never see the unplug.
    let (_broker, db, gw, _) = gateway(dir.path(), 2).await;
    let mut master = plug(&link);
    send_until_acked(&mut master, &[("btn-0001".into(), 1)], false).await;
    // Unplug: the pty goes away (its link first, see `PluggedPty`; a link left pointing at a
    // freed /dev/pts/N was seen as a 120 s timeout of
    // the_firmware_button_on_the_host_survives_a_gateway_restart in a full run). Plug a new one
    // in under the same name.
    drop(master);
    assert!(!link.exists(), "unplugging removes the link");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut master = plug(&link);
    send_until_acked(&mut master, &[("btn-0001".into(), 2)], false).await;
    assert!(gw.metric("eldergate_serial_opens_total").await.unwrap() >= 2.0);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitting_button_survives_a_gateway_kill() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-eldergate");
    let mut master = plug(&link);
    let (_broker, db, mut gw, _) = gateway(dir.path(), 2).await;
    gw.kill9();
    // The press happens while the gateway is down; the button keeps retransmitting.
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        gw.spawn().await.unwrap();
        gw
    });
    let acked = send_until_acked(&mut master, &[("btn-0002".into(), 1)], false).await;
    assert!(acked.contains(&("btn-0002".to_string(), 1)));
    let gw = restart.await.unwrap();
    let journal = gw.journal().await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'alarm_press'")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 1,
        "retransmissions while the gateway was down count once"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firmware_button_on_the_host_survives_a_gateway_restart() {
    use eldergate_sim::serial::serial_link;
    use eldergate_sim::{run, DisplayLog, FirmwareFleet, SimButton};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (_broker, db, mut gw, link) = gateway(dir.path(), 3).await;
    let master = plug(&link);
    gw.kill9();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        gw.spawn().await.unwrap();
        gw
    });
    // A senior presses btn-0003 once (150 ms) while the gateway is down; the firmware
    // retransmits with backoff until the restarted gateway acknowledges.
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let press = move |fleet: &FirmwareFleet, now: Duration| {
        let b = &fleet.buttons[0];
        b.pin
            .set_pressed(now >= Duration::from_millis(100) && now < Duration::from_millis(250));
        if now > Duration::from_secs(1) && b.firmware.outbox.is_idle() {
            d2.store(true, Ordering::Relaxed);
        }
    };
    let stop = {
        let done = done.clone();
        async move {
            // The firmware backs off 1, 2, 4, 8, 16, 30 s: on a loaded machine the ACK can
            // legitimately come only at the retransmission ~62 s after the press.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let fleet = FirmwareFleet::new(
        vec![SimButton::new("btn-0003", 500)],
        vec![],
        DisplayLog::default(),
    );
    let fleet = run(fleet, serial_link(master), press, stop).await;
    // A failed restart is reported as such, not as a missing ACK.
    let gw = restart.await.expect("the gateway restarted");
    assert!(
        done.load(Ordering::Relaxed),
        "the press was never acknowledged"
    );
    assert_eq!(fleet.buttons[0].firmware.outbox.next_seq(), 501);
    let journal = gw.journal().await.unwrap();
    let rows = sqlx::query("SELECT device_id, device_seq FROM events WHERE kind = 'alarm_press'")
        .fetch_all(&journal)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one press, however many retransmissions");
    assert_eq!(
        (rows[0].get::<String, _>(0), rows[0].get::<i64, _>(1)),
        ("btn-0003".to_string(), 500)
    );
    db.drop_db().await;
}

//! The serial contract from its text: every "gateway" vector of protocol/vectors/serial-v1.json
//! (generated from SPEC.md, independently of the Rust code) is sent over a real pty to a running
//! gateway, and the reply must be the vector's bytes exactly — NAK reasons in SPEC's order, an
//! alarm button's CARD_TAP refused as on MQTT, a reused tap seq a conflict — or no reply at all.
//! Then a valid press from another device is still acked.

mod common;

use common::canteen_spec;
use eldergate_e2e::*;
use eldergate_protocol::serial::{decode, encode, Body, Frame, FrameReader, Push, MAX_WIRE};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

const WAIT: Duration = Duration::from_secs(30);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The next frame from the gateway (wire bytes with the delimiter), or None after `wait`.
async fn next_reply(
    port: &mut SerialStream,
    reader: &mut FrameReader,
    wait: Duration,
) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut byte = [0u8; 1];
    let mut raw = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, port.read(&mut byte))
            .await
            .ok()?
        {
            Ok(n) if n > 0 => {}
            // The gateway has not opened its side yet (EIO on a pty master): look again.
            _ => {
                let soon = tokio::time::Instant::now() + Duration::from_millis(50);
                tokio::time::sleep_until(deadline.min(soon)).await;
                continue;
            }
        }
        raw.push(byte[0]);
        if let Push::Frame(_) = reader.push(byte[0]) {
            return Some(std::mem::take(&mut raw));
        }
        if byte[0] == 0 {
            raw.clear();
        }
    }
}

/// Sends `wire` and returns the reply addressed to its (device, seq), skipping others.
async fn exchange(
    port: &mut SerialStream,
    reader: &mut FrameReader,
    wire: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let mut body = wire[..wire.len() - 1].to_vec();
    let (device, seq) = eldergate_protocol::serial::decode_header(&mut body)
        .map(|h| (h.device.to_string(), h.seq))
        .unwrap_or_default();
    port.write_all(wire).await.expect("write");
    loop {
        let reply = next_reply(port, reader, wait).await?;
        let mut b = reply[..reply.len() - 1].to_vec();
        match decode(&mut b) {
            Ok(f) if f.device == device && f.seq == seq => return Some(reply),
            Ok(f) if f.device.is_empty() => return Some(reply),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_vector_of_the_serial_contract_gets_the_reply_the_spec_names() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../protocol/vectors/serial-v1.json"))
            .expect("vectors");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyCONTRACT");
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let serial = format!(
        "[[serial]]\nport = \"{}\"\n[[devices]]\nid = \"kiosk-01\"\nkind = \"health_kiosk\"\nlink = \"mqtt\"\nheartbeat_s = 86400\n",
        link.display()
    );
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 4, 60, &serial);
    let gw = Gateway::start(&spec).await.unwrap();
    let mut port = plug_pty(&link).unwrap();
    let mut reader = FrameReader::new();
    // The gateway opens the port within its reopen backoff: wait for a first ACK.
    let probe = |seq: u32| {
        let mut out = [0u8; MAX_WIRE];
        let n = encode(
            &Frame {
                device: "btn-0004",
                seq,
                body: Body::Alarm { action: 3 },
            },
            &mut out,
        )
        .unwrap();
        out[..n].to_vec()
    };
    let mut opened = false;
    for attempt in 0..30 {
        if exchange(
            &mut port,
            &mut reader,
            &probe(attempt),
            Duration::from_secs(1),
        )
        .await
        .is_some()
        {
            opened = true;
            break;
        }
    }
    assert!(opened, "the gateway never answered on the pty");

    let mut probe_seq = 1000;
    for v in vectors["gateway"]["vectors"]
        .as_array()
        .expect("gateway vectors")
    {
        let name = v["name"].as_str().unwrap_or_default();
        for before in v["before"].as_array().into_iter().flatten() {
            let reply = exchange(
                &mut port,
                &mut reader,
                &unhex(before.as_str().unwrap()),
                WAIT,
            )
            .await;
            assert!(reply.is_some(), "{name}: the frame before it was answered");
        }
        let frame = unhex(v["frame"].as_str().expect("frame"));
        match v["reply"].as_object() {
            Some(reply) => {
                let got = exchange(&mut port, &mut reader, &frame, WAIT).await;
                assert_eq!(
                    got.as_deref().map(hex),
                    reply["hex"].as_str().map(str::to_string),
                    "{name}"
                );
            }
            None => {
                // No reply: the next probe's ACK is the first thing that comes back.
                port.write_all(&frame).await.unwrap();
                probe_seq += 1;
                let got = exchange(&mut port, &mut reader, &probe(probe_seq), WAIT).await;
                assert!(got.is_some(), "{name}: the probe after it was acked");
            }
        }
    }
    // Whatever came before, a valid press from another device is acked.
    let mut out = [0u8; MAX_WIRE];
    let n = encode(
        &Frame {
            device: "btn-0001",
            seq: 77,
            body: Body::Alarm { action: 1 },
        },
        &mut out,
    )
    .unwrap();
    let ack = exchange(&mut port, &mut reader, &out[..n], WAIT)
        .await
        .expect("ack");
    let mut b = ack[..ack.len() - 1].to_vec();
    assert!(matches!(
        decode(&mut b),
        Ok(Frame {
            body: Body::Ack,
            ..
        })
    ));
    drop(gw);
    db.drop_db().await;
}

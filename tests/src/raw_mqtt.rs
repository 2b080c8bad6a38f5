//! A minimal MQTT 3.1.1 publisher on a plain TCP socket, for what a real client will not send:
//! packets above any client limit (poison tests), and large backlogs as fast as the broker takes
//! them (every packet encoded up front and written at once).

use anyhow::{ensure, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a raw publishing session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawOutcome {
    /// The broker acknowledged every publish.
    AllAcked,
    /// The broker closed the connection after acknowledging `acked` publishes (e.g. a packet
    /// above its `max_packet_size`).
    Disconnected {
        /// Publishes acknowledged before.
        acked: usize,
    },
}

fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = u8::try_from(len % 128).unwrap_or(0);
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, clean session, 60 s keep-alive, no credentials.
fn connect(client_id: &str) -> Vec<u8> {
    connect_keep_alive(client_id, 60)
}

/// CONNECT, clean session, `keep_alive_s`, no credentials.
fn connect_keep_alive(client_id: &str, keep_alive_s: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02]);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    string(&mut body, client_id.as_bytes());
    let mut out = vec![0x10];
    remaining_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// PUBLISH at QoS 1.
fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], pkid: u16) {
    out.push(0x32);
    remaining_length(out, 2 + topic.len() + 2 + payload.len());
    string(out, topic.as_bytes());
    out.extend_from_slice(&pkid.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Publishes `messages` (topic, payload) at QoS 1 as client `client_id` and waits until the broker
/// has acknowledged them all (then they are queued for every subscriber, online or not), or has
/// closed the connection.
pub async fn publish_raw(
    port: u16,
    client_id: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<RawOutcome> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("cannot connect to the broker")?;
    s.set_nodelay(true)?;
    s.write_all(&connect(client_id)).await?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await?;
    ensure!(
        connack[0] == 0x20 && connack[3] == 0,
        "broker refused the connection: {connack:?}"
    );
    let (mut r, mut w) = s.into_split();
    let n = messages.len();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut acked = 0usize;
        while acked < n {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => pending.extend_from_slice(buf.get(..k).unwrap_or_default()),
            }
            // Every packet the broker sends us is a 4-byte PUBACK (0x40 0x02 id id).
            let whole = pending.len() / 4 * 4;
            acked += pending
                .get(..whole)
                .unwrap_or_default()
                .chunks(4)
                .filter(|c| c.first() == Some(&0x40))
                .count();
            pending.drain(..whole);
        }
        acked
    });
    let mut out = Vec::new();
    for (i, (topic, payload)) in messages.iter().enumerate() {
        let pkid = u16::try_from(i % 65_535 + 1).unwrap_or(1);
        publish(&mut out, topic, payload, pkid);
    }
    let _ = w.write_all(&out).await;
    let acked = reader.await?;
    if acked >= n {
        let _ = w.write_all(&[0xE0, 0]).await;
        Ok(RawOutcome::AllAcked)
    } else {
        Ok(RawOutcome::Disconnected { acked })
    }
}

/// Counters of a [`heartbeat_device`] fleet.
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    /// Connections accepted (CONNACK 0).
    pub connected: std::sync::atomic::AtomicU64,
    /// Connections refused or lost.
    pub failed: std::sync::atomic::AtomicU64,
    /// Heartbeats written.
    pub sent: std::sync::atomic::AtomicU64,
    /// PUBACKs read.
    pub acked: std::sync::atomic::AtomicU64,
}

/// One device on its own TCP connection, as a real one is: CONNECT (client id = `device`, clean
/// session, keep-alive `every` + 30 s — the heartbeats keep it alive), then a QoS 1 publish to `topic`
/// after `first` and every `every` after that, each waited for its PUBACK; runs until aborted.
/// `connecting` bounds how many connect at once. A few hundred bytes of state per device, so
/// ten thousand fit in one process (each needs a file descriptor: `ulimit -n`).
pub async fn heartbeat_device(
    port: u16,
    device: String,
    topic: String,
    first: std::time::Duration,
    every: std::time::Duration,
    stats: std::sync::Arc<HeartbeatStats>,
    connecting: std::sync::Arc<tokio::sync::Semaphore>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let connected = async {
        let _permit = connecting.acquire().await.ok();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.set_nodelay(true).ok()?;
        let keep_alive = u16::try_from(every.as_secs() + 30).unwrap_or(u16::MAX);
        s.write_all(&connect_keep_alive(&device, keep_alive))
            .await
            .ok()?;
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.ok()?;
        (connack[0] == 0x20 && connack[3] == 0).then_some(s)
    }
    .await;
    let Some(mut s) = connected else {
        stats.failed.fetch_add(1, Relaxed);
        return;
    };
    stats.connected.fetch_add(1, Relaxed);
    let payload = br#"{"v":1,"battery_mv":2950,"battery_pct":80,"rssi":-61}"#;
    let mut next = tokio::time::Instant::now() + first;
    let mut pkid: u16 = 0;
    let mut out = Vec::with_capacity(128);
    loop {
        tokio::time::sleep_until(next).await;
        next += every;
        pkid = pkid % u16::MAX + 1;
        out.clear();
        publish(&mut out, &topic, payload, pkid);
        if s.write_all(&out).await.is_err() {
            stats.failed.fetch_add(1, Relaxed);
            return;
        }
        stats.sent.fetch_add(1, Relaxed);
        let mut ack = [0u8; 4];
        if s.read_exact(&mut ack).await.is_err() {
            stats.failed.fetch_add(1, Relaxed);
            return;
        }
        if ack[0] == 0x40 {
            stats.acked.fetch_add(1, Relaxed);
        }
    }
}

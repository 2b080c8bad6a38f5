//! Bounds of the HTTP API against the real binary: a live stream never holds up shutdown, a
//! half-sent request is dropped after the header timeout, streams and connections are capped with
//! room left for health checks and staff actions, and a roster import cannot take the memory.
//! Timeouts here are hang guards only; nothing asserts how fast anything happens.

use eldergate_e2e::*;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Hang guard for anything that should happen soon.
const GUARD: Duration = Duration::from_secs(60);

/// A gateway on a real Mosquitto with `http` added under `[http]` (the harness writes that table
/// itself, so the keys go in by restarting the gateway on an edited config). Central is a SQLite
/// file: these tests never look at it.
async fn gateway(http: &str) -> (Mosquitto, Gateway) {
    let broker = Mosquitto::start().unwrap();
    let mut gw = Gateway::start(&GatewaySpec::new(
        broker.port,
        "sqlite:central.db".into(),
        2,
    ))
    .await
    .unwrap();
    if !http.is_empty() {
        let sent = gw.sigterm().unwrap();
        assert!(sent.success(), "{sent}");
        let text = std::fs::read_to_string(&gw.config).unwrap();
        std::fs::write(
            &gw.config,
            text.replacen("[http]\n", &format!("[http]\n{http}\n"), 1),
        )
        .unwrap();
        gw.spawn().await.unwrap();
    }
    (broker, gw)
}

async fn healthz(gw: &Gateway) -> u16 {
    tokio::time::timeout(GUARD, reqwest::get(gw.url("/healthz")))
        .await
        .expect("/healthz did not answer")
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Opens the live stream and waits for its response head.
async fn open_stream(gw: &Gateway) -> reqwest::Response {
    tokio::time::timeout(GUARD, gw.api().get(gw.url("/api/alerts/stream")).send())
        .await
        .expect("the stream did not answer")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_open_live_stream_and_the_gateway_exits_cleanly() {
    let (_broker, mut gw) = gateway("").await;
    let stream = open_stream(&gw).await;
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    // The harness waits (30 s at most) for the exit status after SIGTERM.
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.sigterm();
        (s, gw)
    })
    .await
    .unwrap();
    let (status, _gw) = status;
    let status = status.unwrap();
    assert!(status.success(), "exit status {status}");
    // The stream has ended (not been left hanging): it yields its last chunks, then None.
    let ended = tokio::time::timeout(GUARD, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the live stream is still open after the exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let (_broker, gw) = gateway("header_read_timeout_s = 1").await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.http_port))
        .await
        .unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // Never finish the headers: the gateway closes the connection (with or without an answer).
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(GUARD, conn.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "the half-sent request is still open; answer so far: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "{answer}");
    assert_eq!(healthz(&gw).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_over_the_limit_gets_503_and_health_and_staff_actions_still_answer() {
    let (_broker, gw) = gateway("max_sse_clients = 3\nmax_connections = 12").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let s = open_stream(&gw).await;
        assert_eq!(s.status(), 200);
        open.push(s);
    }
    let refused = open_stream(&gw).await;
    assert_eq!(refused.status(), 503);
    let why: serde_json::Value = refused.json().await.unwrap();
    assert!(
        why["error"]
            .as_str()
            .is_some_and(|e| e.contains("http.max_sse_clients")),
        "{why}"
    );
    assert_eq!(healthz(&gw).await, 200);
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let ack = gw
        .api()
        .post(gw.url("/api/alerts/999999/ack"))
        .json(&serde_json::json!({"by": "S009"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 404, "a staff action is answered");
    // A closed stream gives its slot back.
    drop(open.pop());
    let again = eventually(GUARD, "a stream slot to be given back", || async {
        let s = open_stream(&gw).await;
        Ok((s.status() == 200).then_some(s))
    })
    .await
    .unwrap();
    assert_eq!(again.status(), 200);
}

/// Sends `GET path` on a kept-alive connection and returns the body of the answer.
async fn get_on(conn: &mut TcpStream, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("an answer with a content-length");
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_answered_503_and_closed() {
    let (_broker, gw) =
        gateway("max_sse_clients = 1\nmax_connections = 9\nheader_read_timeout_s = 600").await;
    // The first connection waits until it is the only one open (the harness's own requests
    // may still be closing), then stays open; eight silent ones take the other slots.
    let mut first = TcpStream::connect(("127.0.0.1", gw.http_port))
        .await
        .unwrap();
    tokio::time::timeout(GUARD, async {
        loop {
            let metrics = get_on(&mut first, "/metrics").await;
            if metrics.lines().any(|l| l == "eldergate_http_connections 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("other connections are still open");
    let mut held = vec![first];
    for _ in 0..8 {
        held.push(
            TcpStream::connect(("127.0.0.1", gw.http_port))
                .await
                .unwrap(),
        );
    }
    // Accepted in order: the tenth is over the limit.
    let mut tenth = TcpStream::connect(("127.0.0.1", gw.http_port))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(GUARD, tenth.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "the connection over the limit is still open"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("http.max_connections"), "{answer}");
    drop(held);
    let up = eventually(GUARD, "a connection slot to be given back", || async {
        Ok(reqwest::get(gw.url("/healthz"))
            .await
            .ok()
            .filter(|r| r.status() == 200))
    })
    .await;
    assert!(up.is_ok());
}

/// `rows` lines of a roster that is wrong in every column that is checked.
fn garbage_roster(bytes: usize) -> Vec<u8> {
    let mut csv = b"resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n".to_vec();
    let mut i = 0u64;
    while csv.len() < bytes {
        csv.extend_from_slice(format!("bad id {i},,x,notadate,,,,,,,zzzz{i},\n").as_bytes());
        i += 1;
    }
    csv
}

/// Posts a roster for a dry run: the status and the JSON answer. A body over the limit is read
/// to its end before the 413 (up to 64 MiB), so the client gets the answer, not a reset.
async fn dry_run(gw: &Gateway, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = tokio::time::timeout(
        GUARD,
        gw.api()
            .post(gw.url("/api/roster"))
            .query(&[("by", "S009"), ("dry_run", "true")])
            .body(body)
            .send(),
    )
    .await
    .expect("the roster import did not answer")
    .expect("the roster import was cut off instead of answered");
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_roster_is_refused_with_413_and_a_reason() {
    let (_broker, gw) = gateway("roster_max_bytes = 65536").await;
    let (status, why) = dry_run(&gw, garbage_roster(100_000)).await;
    assert_eq!(status, 413, "{why}");
    assert!(
        why["error"]
            .as_str()
            .is_some_and(|e| e.contains("http.roster_max_bytes")),
        "{why}"
    );
    assert_eq!(healthz(&gw).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_mb_garbage_roster_is_refused_and_the_gateway_stays_healthy() {
    let (_broker, gw) = gateway("").await;
    let (status, why) = dry_run(&gw, garbage_roster(30_000_000)).await;
    assert_eq!(status, 413, "{why}");
    assert_eq!(healthz(&gw).await, 200);
    // Under the limit, garbage is read and refused with the first problems and a count.
    let (status, why) = dry_run(&gw, garbage_roster(3_000_000)).await;
    assert_eq!(status, 422, "{why}");
    let listed = why["problems"].as_array().map(Vec::len).unwrap_or(0);
    let total = why["problem_count"].as_u64().unwrap_or(0);
    assert_eq!(listed, 100, "{why}");
    assert!(total > 100_000, "{why}");
    assert_eq!(healthz(&gw).await, 200);
}

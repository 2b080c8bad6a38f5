//! The gateway as systemd sees it (deploy/systemd: `Type=notify`, `WatchdogSec=`), through the
//! same notification socket protocol systemd speaks: a unix datagram socket named by
//! `NOTIFY_SOCKET`, the interval in `WATCHDOG_USEC`. The gateway says `READY=1` once it can take
//! alarms, pings `WATCHDOG=1` while its writer commits — also while the broker is down (a restart
//! cannot bring a broker back; gateway/src/service.rs) — and `STOPPING=1` on SIGTERM.
//!
//! Each test runs in its own process (nextest), so setting the environment the gateway inherits
//! does not reach other tests.

use eldergate_e2e::*;
use std::time::Duration;
use tokio::net::UnixDatagram;

const WAIT: Duration = Duration::from_secs(30);

/// The next notification that contains `what`, skipping others; an error after `WAIT`.
async fn next_with(sock: &UnixDatagram, what: &str) -> anyhow::Result<String> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("no {what:?} from the gateway within {WAIT:?}"))??;
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.lines().any(|l| l == what) {
            return Ok(msg);
        }
    }
}

#[tokio::test]
async fn ready_then_watchdog_pings_through_a_broker_outage_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);
    // 1 s: the gateway pings every half interval (0.5 s), each after a committed probe.
    std::env::set_var("WATCHDOG_USEC", "1000000");
    std::env::remove_var("WATCHDOG_PID");

    let broker = Mosquitto::start().unwrap();
    let spec = GatewaySpec::new(broker.port, "sqlite:central.db".into(), 2);
    let mut gw = Gateway::start(&spec).await.unwrap();

    next_with(&sock, "READY=1").await.unwrap();
    for _ in 0..3 {
        next_with(&sock, "WATCHDOG=1").await.unwrap();
    }

    // The broker goes away: the writer still commits, so the pings go on.
    drop(broker);
    // Drain what was sent before the broker went, then wait for more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut buf = vec![0u8; 4096];
    while sock.try_recv(&mut buf).is_ok() {}
    for _ in 0..3 {
        next_with(&sock, "WATCHDOG=1").await.unwrap();
    }
    // Monitoring sees the outage on /healthz; the service manager sees a live gateway.
    let h: serde_json::Value = reqwest::get(gw.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    assert!(
        h.get("status").is_some(),
        "/healthz answers with a status during the outage: {h}"
    );

    let status = gw.sigterm().unwrap();
    assert!(status.success(), "a SIGTERM is a clean exit: {status}");
    next_with(&sock, "STOPPING=1").await.unwrap();
}

//! The link to the central PostgreSQL over TLS (crate::central_link, docs/adr/0012): a private
//! cluster that takes TLS only (`hostssl`), a certificate from a CA made in the test, the real
//! gateway binary forwarding to it. The shared cluster on 5432 is not touched.

use eldergate_e2e::private_pg::PrivatePg;
use eldergate_e2e::test_ca::TestCa;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The central store as the test sees it (over the cluster's Unix socket).
async fn central_events(pg: &PrivatePg) -> i64 {
    let pool = sqlx::PgPool::connect(&pg.socket_url()).await.unwrap();
    let exists: bool = sqlx::query("SELECT to_regclass('public.events') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    if !exists {
        return 0;
    }
    sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0)
}

/// (events in the journal, forward cursor).
async fn journal_state(gw: &Gateway) -> (i64, i64) {
    let j = gw.journal().await.unwrap();
    let events: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&j)
        .await
        .unwrap()
        .get(0);
    let cursor: i64 = sqlx::query("SELECT forwarded_upto FROM forward_cursor")
        .fetch_one(&j)
        .await
        .unwrap()
        .get(0);
    (events, cursor)
}

/// Starts a gateway whose `central.ca_file` is `ca` (through its environment override) and
/// presses button 1; returns once the press is acked (the alarm path never needs central).
async fn gateway_pressing(broker: &Mosquitto, url: String, ca: Option<&Path>) -> Gateway {
    match ca {
        Some(ca) => std::env::set_var("ELDERGATE__CENTRAL__CA_FILE", ca),
        None => std::env::remove_var("ELDERGATE__CENTRAL__CA_FILE"),
    }
    let spec = GatewaySpec::new(broker.port, url, 1);
    let gw = Gateway::start(&spec).await.unwrap();
    std::env::remove_var("ELDERGATE__CENTRAL__CA_FILE");
    let fleet = Fleet::start(fleet_options(broker.port, &format!("f-{}", gw.http_port)))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await, "the press is acked");
    gw
}

async fn log_line_with(gw: &Gateway, needle: &str) -> String {
    eventually(WAIT, needle, || async {
        let log = std::fs::read_to_string(gw.log_path())?;
        Ok(log.lines().find(|l| l.contains(needle)).map(str::to_string))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; gateway log:\n{}",
            std::fs::read_to_string(gw.log_path()).unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_forwards_over_tls() {
    let ca = TestCa::new("eldergate test district CA").unwrap();
    let cert = ca.server(&["127.0.0.1"]).unwrap();
    let pg = PrivatePg::start(&cert.cert_pem, &cert.key_pem).unwrap();
    let ca_file = pg.dir().join("district-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let broker = Mosquitto::start().unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full",
        pg.port
    );
    let gw = gateway_pressing(&broker, url, Some(&ca_file)).await;
    let forwarded = eventually(WAIT, "events at the central store", || async {
        let n = central_events(&pg).await;
        Ok((n > 0).then_some(n))
    })
    .await
    .unwrap();
    assert!(forwarded >= 1);
    // The gateway's connection is TLS (the server would refuse anything else, and says so).
    let pool = sqlx::PgPool::connect(&pg.socket_url()).await.unwrap();
    let tls_clients: i64 = sqlx::query(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE s.ssl AND a.client_addr IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert!(tls_clients >= 1, "the gateway is connected with TLS");
    let (_, cursor) = eventually(WAIT, "the cursor to move", || async {
        let s = journal_state(&gw).await;
        Ok((s.1 > 0).then_some(s))
    })
    .await
    .unwrap();
    assert!(cursor >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_host_name_or_plaintext_is_refused_and_nothing_is_forwarded() {
    let ca = TestCa::new("eldergate test district CA").unwrap();
    let other_ca = TestCa::new("someone else's CA").unwrap();
    let cert = ca.server(&["127.0.0.1"]).unwrap();
    let pg = PrivatePg::start(&cert.cert_pem, &cert.key_pem).unwrap();
    let right = pg.dir().join("district-ca.pem");
    let wrong = pg.dir().join("other-ca.pem");
    std::fs::write(&right, ca.pem()).unwrap();
    std::fs::write(&wrong, other_ca.pem()).unwrap();
    // One broker per gateway: the three share a gateway id (and so MQTT client ids and topics),
    // and on one broker they would take each other's presses and sessions.
    let brokers = [
        Mosquitto::start().unwrap(),
        Mosquitto::start().unwrap(),
        Mosquitto::start().unwrap(),
    ];
    let port = pg.port;

    // A CA that did not sign the server's certificate.
    let wrong_ca = gateway_pressing(
        &brokers[0],
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full"),
        Some(&wrong),
    )
    .await;
    // The right CA, but a host name the certificate does not name (it names 127.0.0.1 only).
    let wrong_host = gateway_pressing(
        &brokers[1],
        format!(
            "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            right.display()
        ),
        None,
    )
    .await;
    // Plaintext, written down, to a server that takes TLS only.
    let plaintext = gateway_pressing(
        &brokers[2],
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
        None,
    )
    .await;

    let line = log_line_with(&wrong_ca, "TLS to the central store failed").await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(
        line.contains("central.ca_file"),
        "the remedy is named: {line}"
    );
    let line = log_line_with(&wrong_host, "TLS to the central store failed").await;
    assert!(
        line.contains("localhost") || line.contains("NotValidForName"),
        "{line}"
    );
    let line = log_line_with(&plaintext, "accepts only TLS").await;
    assert!(line.contains("no encryption"), "{line}");

    for gw in [&wrong_ca, &wrong_host, &plaintext] {
        let (events, cursor) = journal_state(gw).await;
        assert!(events >= 1, "the press is in the journal");
        assert_eq!(cursor, 0, "nothing is marked forwarded");
        assert!(gw.metric("eldergate_forward_failures_total").await.unwrap() >= 1.0);
    }
    assert_eq!(
        central_events(&pg).await,
        0,
        "nothing reached the central store"
    );
}

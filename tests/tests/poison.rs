//! Poison input on MQTT: no delivery, however large or malformed, on any topic the gateway
//! subscribes to, can silence the alarm path (issue 11: one ~1 MiB QoS 1 publish made the
//! gateway's client drop its connection, and the broker redelivered it on every reconnect).

use eldergate_e2e::raw_mqtt::{publish_raw, RawOutcome};
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_protocol::topic;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// Every topic filter the gateway subscribes to, with a device that may use it.
fn subscribed_topics() -> Vec<String> {
    vec![
        topic::alarm(SITE, "btn-0001"),
        topic::staff_cmd(SITE, "S009"),
        topic::telemetry(SITE, "btn-0002", "heartbeat"),
        topic::tap(SITE, "rdr-01"),
    ]
}

/// Dead letters of `len`-byte payloads: (source, reason, bytes kept).
async fn dead_letters_of_len(
    journal: &sqlx::SqlitePool,
    len: usize,
) -> anyhow::Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT source, reason, length(payload) FROM dead_letters WHERE payload_len = ? ORDER BY source",
    )
    .bind(i64::try_from(len)?)
    .fetch_all(journal)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

async fn press_from_another_device_is_acked(broker_port: u16) {
    let fleet = Fleet::start(fleet_options(broker_port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0003", AlarmAction::Press).await;
    assert!(
        fleet.wait_all_acked(WAIT).await,
        "a valid press was not acked after the poison input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_garbage_on_every_subscribed_topic_never_silence_alarms() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), 3))
        .await
        .unwrap();
    // Let both connections subscribe before the poison goes out.
    press_from_another_device_is_acked(broker.port).await;

    // Above the broker's max_packet_size: refused there (the sender is disconnected).
    for (i, t) in subscribed_topics().into_iter().enumerate() {
        let outcome = publish_raw(broker.port, &format!("t-huge-{i}"), &[(t, vec![b'A'; MIB])])
            .await
            .unwrap();
        assert_eq!(outcome, RawOutcome::Disconnected { acked: 0 });
    }
    // Within the broker's limit but above the device payload limit, and garbage of every kind.
    const BIG: usize = 15 * 1024;
    let mut poison = Vec::new();
    for t in subscribed_topics() {
        poison.push((t.clone(), vec![b'{'; BIG]));
        poison.push((t.clone(), vec![0xFF, 0x00, 0xFE, 0x80, 0x01]));
        poison.push((t.clone(), Vec::new()));
        poison.push((t.clone(), vec![b'['; 4000])); // nesting beyond serde_json's limit
        poison.push((
            t,
            br#"{"v":1,"seq":-1,"action":"press","extra":[1e999]}"#.to_vec(),
        ));
    }
    let outcome = publish_raw(broker.port, "t-poison", &poison).await.unwrap();
    assert_eq!(outcome, RawOutcome::AllAcked);

    press_from_another_device_is_acked(broker.port).await;
    let journal = gw.journal().await.unwrap();
    let big = eventually(WAIT, "a dead letter per big payload", || async {
        let rows = dead_letters_of_len(&journal, BIG).await?;
        Ok((rows.len() >= subscribed_topics().len()).then_some(rows))
    })
    .await
    .unwrap();
    let mut expected: Vec<(String, String, i64)> = subscribed_topics()
        .into_iter()
        .map(|t| (t, "oversize".to_string(), 4096))
        .collect();
    expected.sort();
    assert_eq!(big, expected);
    eventually(WAIT, "a dead letter per poison publish", || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(&journal)
            .await?
            .get(0);
        Ok((n >= i64::try_from(poison.len())?).then_some(()))
    })
    .await
    .unwrap();
    assert!(dead_letters_of_len(&journal, MIB).await.unwrap().is_empty());
    // No reconnect at all: one connect per connection.
    assert_eq!(
        gw.metric("eldergate_mqtt_connects_total").await.unwrap(),
        2.0
    );
    assert_eq!(gw.metric("eldergate_mqtt_poison_total").await.unwrap(), 0.0);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_above_the_client_limit_is_read_once_dead_lettered_and_acked() {
    // A broker without max_packet_size (or one that stored the message before it was set).
    let broker = Mosquitto::start_limited(
        BrokerLimits {
            max_packet_size: None,
            ..BrokerLimits::DEPLOY
        },
        "allow_anonymous true\n",
    )
    .unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), 3))
        .await
        .unwrap();
    press_from_another_device_is_acked(broker.port).await;

    let huge: Vec<(String, Vec<u8>)> = subscribed_topics()
        .into_iter()
        .map(|t| (t, vec![b'A'; MIB]))
        .collect();
    let outcome = publish_raw(broker.port, "t-huge", &huge).await.unwrap();
    assert_eq!(outcome, RawOutcome::AllAcked);

    press_from_another_device_is_acked(broker.port).await;
    let journal = gw.journal().await.unwrap();
    let rows = eventually(WAIT, "a dead letter per 1 MiB delivery", || async {
        let rows = dead_letters_of_len(&journal, MIB).await?;
        Ok((rows.len() >= huge.len()).then_some(rows))
    })
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        huge.len(),
        "each is dead-lettered once: {rows:?}"
    );
    assert!(rows.iter().all(|(_, _, kept)| *kept == 4096));
    // Counted, and no reconnect loop: a few reconnects, not one per redelivery.
    assert!(gw.metric("eldergate_mqtt_poison_total").await.unwrap() >= 2.0);
    let connects = gw.metric("eldergate_mqtt_connects_total").await.unwrap();
    assert!(connects <= 6.0, "{connects} connects: a reconnect loop");
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    assert!(log.contains("reading it once with a larger limit"));
    db.drop_db().await;
}

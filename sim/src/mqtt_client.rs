//! MQTT plumbing shared by the simulated clients: options and an event-loop driver.
//!
//! Simulated devices use a clean session: like a real button after a reset, they rely on their
//! own retransmission, not on the broker, to get an event through.

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Options of a simulated client: clean session, room for large bursts.
pub(crate) fn mqtt_options(
    host: &str,
    port: u16,
    client_id: &str,
    credentials: &Option<(String, String)>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_clean_session(true)
        .set_inflight(1000)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((u, p)) = credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    o
}

/// Polls an event loop forever (reconnecting with a short pause), subscribing to `filters` on
/// every connect and handing every incoming publish to `on_publish`. `ready` is notified after
/// the first SubAck. Returns the polling task (abort it to close the connection).
pub(crate) fn drive(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    ready: Arc<Notify>,
    on_publish: impl Fn(&str, &[u8]) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for f in &filters {
                        let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => ready.notify_waiters(),
                Ok(Event::Incoming(Incoming::Publish(p))) => on_publish(&p.topic, &p.payload),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
}

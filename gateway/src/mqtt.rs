//! MQTT connections: options from config, and an event-loop driver that never stops.
//!
//! Guarantees (see the rumqttc pitfalls in STYLE.md):
//! - Every connection uses a persistent session (`clean_session = false`) with a stable client id,
//!   so QoS 1 messages published while the gateway is away are delivered when it is back.
//! - Subscriptions are (re)made whenever the broker says it has no session for us.
//! - Reconnects back off exponentially, capped at [`MAX_BACKOFF`].
//! - Incoming QoS 1 publishes are acked manually (`manual_acks`) by whoever handles them, after
//!   their effect is committed.

use crate::config::{BrokerConfig, BrokerMode};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Publish, QoS};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Longest pause between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

/// Parses `mqtt://host:port` / `mqtts://host:port` (port defaults 1883 / 8883).
pub fn parse_broker_url(url: &str) -> Result<BrokerAddr, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') || rest.contains('/') {
        return Err(format!(
            "{url:?}: put credentials in broker.username / ELDERGATE__BROKER__PASSWORD, and no path"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: port {p:?} is not a number 1-65535"))?,
        ),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(BrokerAddr {
        host: host.to_string(),
        port,
        tls,
    })
}

/// Builds options for one gateway connection. `suffix` makes the client id (`{gateway}-{suffix}`).
pub fn options(
    broker: &BrokerConfig,
    addr: &BrokerAddr,
    client_id: String,
) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, addr.host.clone(), addr.port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(u64::from(broker.keep_alive_s.max(5))))
        .set_max_packet_size(256 * 1024, 256 * 1024)
        .set_inflight(1000);
    if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
        o.set_credentials(u.clone(), p.clone());
    }
    if addr.tls {
        let transport = match &broker.ca_file {
            Some(ca) => rumqttc::Transport::tls(std::fs::read(ca)?, None, None),
            None => rumqttc::Transport::tls_with_default_config(),
        };
        o.set_transport(transport);
    }
    Ok(o)
}

/// The broker address the gateway should connect to, embedded or external.
pub fn broker_addr(broker: &BrokerConfig) -> Result<BrokerAddr, String> {
    match broker.mode {
        BrokerMode::Embedded => {
            let l = broker
                .listen
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 1883)));
            Ok(BrokerAddr {
                host: l.ip().to_string(),
                port: l.port(),
                tls: false,
            })
        }
        BrokerMode::External => parse_broker_url(broker.url.as_deref().unwrap_or_default()),
    }
}

/// What a connection does when it (re)connects.
pub struct Session {
    /// Filters to subscribe to (QoS 1) when the broker has no session for us.
    pub subscriptions: Vec<String>,
    /// Retained message to publish on every connect (e.g. gateway status "online").
    pub on_connect: Option<(String, Vec<u8>)>,
    /// Called on every connect (e.g. to give devices a grace period after a broker outage).
    pub connected: Option<Box<dyn Fn() + Send + Sync>>,
}

/// A client with Nagle's algorithm off: alarm traffic is small packets that must not wait for a
/// delayed TCP ACK (measured: ~20 ms added per hop with it on).
pub fn new_client(opts: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(opts, capacity);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// Sets the last will (retained) on `opts`.
pub fn set_last_will(opts: &mut MqttOptions, topic: String, payload: &'static [u8]) {
    opts.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
}

/// Spawns the event loop of one connection. Incoming publishes go to `incoming`; the task ends
/// when `shutdown` turns true, after a clean disconnect.
pub fn spawn(
    name: &'static str,
    opts: MqttOptions,
    capacity: usize,
    session: Session,
    incoming: Option<mpsc::Sender<Publish>>,
    mut shutdown: watch::Receiver<bool>,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let (client, mut eventloop) = new_client(opts, capacity);
    let c = client.clone();
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(ev) => {
                        backoff = Duration::from_millis(100);
                        handle_event(name, ev, &c, &session, incoming.as_ref()).await;
                    }
                    Err(e) => {
                        metrics::counter!("eldergate_mqtt_connection_errors_total", "connection" => name).increment(1);
                        tracing::warn!(connection = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                _ = shutdown.changed() => {
                    drain_and_disconnect(name, &c, &mut eventloop).await;
                    break;
                }
            }
        }
    });
    (client, task)
}

async fn handle_event(
    name: &'static str,
    ev: Event,
    client: &AsyncClient,
    session: &Session,
    incoming: Option<&mpsc::Sender<Publish>>,
) {
    match ev {
        Event::Incoming(Incoming::ConnAck(ack)) => {
            tracing::info!(
                connection = name,
                session_present = ack.session_present,
                "MQTT connected"
            );
            metrics::counter!("eldergate_mqtt_connects_total", "connection" => name).increment(1);
            if !ack.session_present {
                for f in &session.subscriptions {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::error!(connection = name, filter = %f, error = %e, "subscribe request failed");
                    }
                }
            }
            if let Some(f) = &session.connected {
                f();
            }
            if let Some((topic, payload)) = &session.on_connect {
                let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone());
            }
        }
        Event::Incoming(Incoming::Publish(p)) => {
            // A closed handler means we are shutting down: the publish stays unacked and the
            // broker redelivers it to our persistent session next time.
            if let Some(tx) = incoming {
                let _ = tx.send(p).await;
            }
        }
        _ => {}
    }
}

/// Keeps polling briefly so queued acks and publishes leave, then disconnects.
async fn drain_and_disconnect(name: &'static str, client: &AsyncClient, eventloop: &mut EventLoop) {
    let _ = client.try_disconnect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
    }
    tracing::info!(connection = name, "MQTT disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1").unwrap(),
            BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(
            parse_broker_url("mqtts://b.example:8884").unwrap().port,
            8884
        );
        assert!(parse_broker_url("http://x").is_err());
        assert!(parse_broker_url("mqtt://u:p@x").is_err());
        assert!(parse_broker_url("mqtt://x:notaport").is_err());
    }
}

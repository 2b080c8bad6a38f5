//! MQTT connections: options from config, and an event-loop driver that never stops and never
//! blocks.
//!
//! Guarantees (see the rumqttc pitfalls in STYLE.md):
//! - Every connection uses a persistent session (`clean_session = false`) with a stable client id,
//!   so QoS 1 messages published while the gateway is away are delivered when it is back.
//! - Subscriptions are (re)made whenever the broker says it has no session for us.
//! - Reconnects back off exponentially, capped at [`MAX_BACKOFF`].
//! - Incoming QoS 1 publishes are acked manually (`manual_acks`) by whoever handles them, after
//!   their effect is committed.
//! - **The task that polls the event loop never waits on anything but the event loop.** Its
//!   consumers (ingest handler → journal → acker) send their acks back through the event loop's
//!   own request channel; if the poller waited on them, a large enough backlog closes the circle
//!   and nothing moves again (issue 11: 95,000 queued at the broker stopped the gateway for good
//!   at 50,207 received / 33,821 acked, i.e. a full 16,384 pending queue and a full 65,536 request
//!   channel holding two requests per ack). So received publishes are handed to the handler
//!   through an unbounded queue ([`Handoff`] → [`Inbox`]): the event loop only pushes, the
//!   handler alone waits. Memory stays bounded by the broker: it sends at most `max_inflight_messages`
//!   unacknowledged QoS 1 messages (1000 in deploy/mosquitto), and nothing is acked before its
//!   commit; QoS 0 deliveries (which the broker does not count) are shed, counted and logged
//!   once more than [`SHED_QOS0_ABOVE`] publishes wait.
//! - **No delivery can poison a connection.** The broker refuses packets above
//!   [`BROKER_MAX_PACKET`] (Mosquitto `max_packet_size`), and the client's incoming limit
//!   [`MAX_INCOMING_PACKET`] is far above that, so a well-configured broker never hands us a
//!   packet we refuse. If one still comes (a broker without the limit, a message stored before it
//!   was set), rumqttc drops the connection and the broker redelivers it to our persistent session
//!   on every reconnect. We count it (`eldergate_mqtt_poison_total`), log it, and read the next
//!   connection with a limit large enough for it (up to [`POISON_READ_LIMIT`]): the publish then
//!   reaches ingest, which dead-letters it ("oversize") and acks it, and the limit goes back to
//!   normal. A delivery above [`POISON_READ_LIMIT`] cannot be read, so it cannot be acked either:
//!   it is logged as an error on every attempt (with what to do) while the connection retries with
//!   backoff. The lasting fix for that case is MQTT v5, where the broker itself discards what is
//!   larger than the client's announced maximum packet size.

use crate::config::{BrokerConfig, BrokerMode};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Publish, QoS,
    Request, StateError,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest MQTT packet (whole packet, as Mosquitto counts it) the broker accepts from anyone:
/// `max_packet_size 16384` in deploy/mosquitto/eldergate.conf and in the test harness. A device
/// payload is at most [`eldergate_protocol::MAX_DEVICE_PAYLOAD`] (4 KiB); the rest is room for the
/// topic and MQTT v5 properties. Deliveries between the two are dead-lettered by ingest
/// ("oversize"); anything larger is refused by the broker (it disconnects the sender).
pub const BROKER_MAX_PACKET: usize = 16 * 1024;

/// The client's incoming limit (rumqttc compares it with the packet's remaining length). It must
/// stay above anything the broker can deliver, or a delivery becomes a connection error that the
/// broker repeats on every reconnect: 32 × [`BROKER_MAX_PACKET`] for Mosquitto, and above the
/// embedded rumqttd's `max_payload_size` (256 KiB) plus a topic.
pub const MAX_INCOMING_PACKET: usize = 512 * 1024;

/// The client's outgoing limit: the broker disconnects a client that sends a packet above
/// [`BROKER_MAX_PACKET`], so we refuse it here, where it can be named and dropped.
pub const MAX_OUTGOING_PACKET: usize = BROKER_MAX_PACKET;

/// Largest delivery the gateway reads once (one packet in memory) to dead-letter and ack a poison
/// message that slipped past the broker's limit.
pub const POISON_READ_LIMIT: usize = 16 * 1024 * 1024;

/// Above this many publishes waiting for the handler, QoS 0 deliveries are shed (counted in
/// `eldergate_mqtt_shed_total`): the broker does not count them in its in-flight window, so they
/// are the only input that could grow the hand-off without bound, and QoS 0 promises nothing.
pub const SHED_QOS0_ABOVE: usize = 4096;

/// Waiting publishes above which we warn that the broker's in-flight window is larger than
/// deploy/mosquitto sets (or unlimited): memory then grows with the broker's backlog.
const HELD_WARN: usize = 20_000;

/// Longest pause between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub use crate::config::{parse_broker_url, BrokerAddr};

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
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_inflight(1000)
        // Patched rumqttc (third_party/rumqttc): queued packets share one flush.
        .set_max_request_batch(usize::from(broker.write_batch.clamp(1, 1000)));
    if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
        o.set_credentials(u.clone(), p.clone());
    }
    if addr.tls {
        o.set_transport(tls_transport(broker)?);
    }
    Ok(o)
}

/// The rustls transport for `mqtts://`: the CA file (or the system roots) and, when configured,
/// a client certificate. Certificates are verified against the CA and the url's host name; there
/// is no option to skip that and no plaintext fallback (config validation refuses TLS files with
/// an `mqtt://` url).
pub fn tls_transport(broker: &BrokerConfig) -> anyhow::Result<rumqttc::Transport> {
    use anyhow::Context;
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let client_auth = match (&broker.client_cert, &broker.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        (None, None) => None,
        _ => anyhow::bail!("broker.client_cert and broker.client_key go together"),
    };
    Ok(match &broker.ca_file {
        Some(ca) => rumqttc::Transport::tls(read(ca)?, client_auth, None),
        None if client_auth.is_none() => rumqttc::Transport::tls_with_default_config(),
        None => anyhow::bail!("a client certificate needs broker.ca_file (the broker's CA)"),
    })
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
    /// Set while the broker has accepted this connection (for `/healthz`).
    pub up: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

fn set_up(session: &Session, up: bool) {
    if let Some(flag) = &session.up {
        flag.store(up, std::sync::atomic::Ordering::Relaxed);
    }
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

/// Spawns the event loop of one connection. Incoming publishes go to `incoming` (the other end
/// is the handler's [`Inbox`]; a slow handler never stops the event loop); the task ends when
/// `shutdown` turns true, after a clean disconnect.
pub fn spawn(
    name: &'static str,
    opts: MqttOptions,
    capacity: usize,
    session: Session,
    incoming: Option<Handoff>,
    shutdown: CancellationToken,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let normal_limit = opts.max_packet_size();
    let (client, mut eventloop) = new_client(opts, capacity);
    let c = client.clone();
    let task = tokio::spawn(async move {
        let mut handoff = incoming;
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(ev) => {
                        backoff = Duration::from_millis(100);
                        if matches!(ev, Event::Incoming(Incoming::ConnAck(_))) {
                            // A raised limit (see `connection_lost`) serves one connection only.
                            let out = MAX_OUTGOING_PACKET;
                            eventloop.mqtt_options.set_max_packet_size(normal_limit, out);
                        }
                        handle_event(name, ev, &c, &session, handoff.as_mut());
                    }
                    Err(e) => {
                        set_up(&session, false);
                        connection_lost(name, &e, &mut eventloop, normal_limit, backoff);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                _ = shutdown.cancelled() => {
                    set_up(&session, false);
                    drain_and_disconnect(name, &c, &mut eventloop).await;
                    break;
                }
            }
        }
        // What the inbox still holds was never acked: the broker redelivers it next time.
    });
    (client, task)
}

/// The event loop's end of the hand-off to the handler: it only pushes, never waits. See the
/// module doc for why, and for what bounds the memory it holds.
pub struct Handoff {
    name: &'static str,
    tx: mpsc::UnboundedSender<Publish>,
    /// Publishes pushed and not yet taken by the handler.
    held: Arc<AtomicUsize>,
    held_gauge: metrics::Gauge,
    shed: u64,
    warned: bool,
}

/// The handler's end of the hand-off: the publishes received on one connection, in order.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Publish>,
    held: Arc<AtomicUsize>,
    held_gauge: metrics::Gauge,
}

/// A hand-off from connection `name`'s event loop (give it to [`spawn`]) to its handler. The
/// handler takes from the queue itself (no relay task between them: one task hand-off less per
/// message).
pub fn handoff(name: &'static str) -> (Handoff, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel::<Publish>();
    let held = Arc::new(AtomicUsize::new(0));
    let held_gauge = metrics::gauge!("eldergate_mqtt_held", "connection" => name);
    let inbox = Inbox {
        rx,
        held: held.clone(),
        held_gauge: held_gauge.clone(),
    };
    let h = Handoff {
        name,
        tx,
        held,
        held_gauge,
        shed: 0,
        warned: false,
    };
    (h, inbox)
}

impl Inbox {
    /// The next publish; None once the event loop has stopped.
    pub async fn recv(&mut self) -> Option<Publish> {
        let p = self.rx.recv().await?;
        let left = self.held.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.held_gauge.set(gauge(left));
        Some(p)
    }
}

impl Handoff {
    /// Never waits.
    fn push(&mut self, p: Publish) {
        let name = self.name;
        let held = self.held.load(Ordering::Relaxed);
        if p.qos == QoS::AtMostOnce && held >= SHED_QOS0_ABOVE {
            self.shed = self.shed.saturating_add(1);
            metrics::counter!("eldergate_mqtt_shed_total", "connection" => name).increment(1);
            if self.shed.is_power_of_two() {
                tracing::warn!(connection = name, held, shed_so_far = self.shed, topic = %p.topic, "ingest is behind: QoS 0 publish dropped (QoS 1 is never dropped)");
            }
            return;
        }
        if held >= HELD_WARN && !self.warned {
            self.warned = true;
            tracing::warn!(connection = name, held, "more unacknowledged publishes wait for ingest than the broker should send; set max_inflight_messages in mosquitto.conf (deploy/mosquitto) to bound the gateway's memory");
        } else if held < HELD_WARN / 2 {
            self.warned = false;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        self.held_gauge.set(gauge(held + 1));
        if self.tx.send(p).is_err() {
            // The handler has stopped (shutdown): the publish stays unacked and is redelivered.
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn gauge(n: usize) -> f64 {
    u32::try_from(n)
        .map(f64::from)
        .unwrap_or(f64::from(u32::MAX))
}

/// Never waits: everything it asks of the client is `try_*`.
fn handle_event(
    name: &'static str,
    ev: Event,
    client: &AsyncClient,
    session: &Session,
    handoff: Option<&mut Handoff>,
) {
    match ev {
        Event::Incoming(Incoming::ConnAck(ack)) => {
            tracing::info!(
                connection = name,
                session_present = ack.session_present,
                "MQTT connected"
            );
            metrics::counter!("eldergate_mqtt_connects_total", "connection" => name).increment(1);
            metrics::gauge!("eldergate_mqtt_connected", "connection" => name).set(1.0);
            set_up(session, true);
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
            if let Some(h) = handoff {
                h.push(p);
            }
        }
        _ => {}
    }
}

/// Counts and logs a lost connection, and gets a poison packet out of the way of the next one.
fn connection_lost(
    name: &'static str,
    e: &ConnectionError,
    eventloop: &mut EventLoop,
    normal_limit: usize,
    backoff: Duration,
) {
    metrics::counter!("eldergate_mqtt_connection_errors_total", "connection" => name).increment(1);
    metrics::gauge!("eldergate_mqtt_connected", "connection" => name).set(0.0);
    let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => {
            let size = *size;
            metrics::counter!("eldergate_mqtt_poison_total", "connection" => name, "direction" => "incoming").increment(1);
            match poison_read_limit(size) {
                Some(limit) => {
                    tracing::error!(connection = name, bytes = size, limit = normal_limit, read_with = limit, retry_in_ms,
                        "the broker delivered a packet above the client's limit (is max_packet_size set in mosquitto.conf? see deploy/mosquitto); reading it once with a larger limit so that it is dead-lettered and acked");
                    eventloop
                        .mqtt_options
                        .set_max_packet_size(limit, MAX_OUTGOING_PACKET);
                }
                None => {
                    tracing::error!(connection = name, bytes = size, max_readable = POISON_READ_LIMIT, retry_in_ms,
                        "the broker keeps delivering a packet too large to read, so it can never be acked and blocks this connection; set max_packet_size in mosquitto.conf (deploy/mosquitto) and remove the message from the broker (it is queued for this gateway's persistent session)");
                }
            }
        }
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::OutgoingPacketTooLarge { pkt_size, max },
        )) => {
            metrics::counter!("eldergate_mqtt_poison_total", "connection" => name, "direction" => "outgoing").increment(1);
            // rumqttc would retransmit it after every reconnect: drop it (it is ours, and the
            // broker would refuse it anyway).
            let before = eventloop.pending.len();
            eventloop
                .pending
                .retain(|r| !matches!(r, Request::Publish(p) if p.size() > MAX_OUTGOING_PACKET));
            tracing::error!(connection = name, bytes = pkt_size, max, dropped = before - eventloop.pending.len(), retry_in_ms,
                "the gateway tried to publish a packet above the broker's limit; dropped it (a bug: please report it)");
        }
        _ => {
            tracing::warn!(connection = name, error = %e, retry_in_ms, "MQTT connection lost; reconnecting");
        }
    }
}

/// The incoming limit to read a `size`-byte poison packet with, if it is small enough to read.
pub fn poison_read_limit(size: usize) -> Option<usize> {
    if size > POISON_READ_LIMIT {
        return None;
    }
    let limit = size
        .checked_next_power_of_two()
        .unwrap_or(POISON_READ_LIMIT)
        .clamp(MAX_INCOMING_PACKET, POISON_READ_LIMIT);
    Some(limit)
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
    metrics::gauge!("eldergate_mqtt_connected", "connection" => name).set(0.0);
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

    #[test]
    fn client_limit_is_above_anything_the_broker_accepts() {
        // rumqttc compares the remaining length (packet minus a fixed header of at most 5 bytes).
        const { assert!(MAX_INCOMING_PACKET > BROKER_MAX_PACKET) };
        const { assert!(BROKER_MAX_PACKET > eldergate_protocol::MAX_DEVICE_PAYLOAD + 1024) };
        const { assert!(MAX_OUTGOING_PACKET <= BROKER_MAX_PACKET) };
    }

    #[test]
    fn a_poison_packet_is_read_with_a_limit_that_fits_it_up_to_the_ceiling() {
        assert_eq!(poison_read_limit(600 * 1024), Some(1024 * 1024));
        assert_eq!(poison_read_limit((1 << 20) + 40), Some(2 << 20));
        assert_eq!(poison_read_limit(1000), Some(MAX_INCOMING_PACKET));
        assert_eq!(
            poison_read_limit(POISON_READ_LIMIT),
            Some(POISON_READ_LIMIT)
        );
        assert_eq!(poison_read_limit(POISON_READ_LIMIT + 1), None);
        assert_eq!(poison_read_limit(usize::MAX), None);
    }
}

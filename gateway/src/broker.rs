//! The embedded MQTT broker (rumqttd) for the demo and tests of the gateway alone.
//!
//! It keeps nothing on disk, so it is not for production: production uses an external Mosquitto
//! with per-device credentials and ACLs (deploy/mosquitto). It listens on the configured address
//! only (loopback in the demo). See docs/adr/0002-embedded-broker.md.
//!
//! It is compiled only with the cargo feature `embedded-broker` (off by default; crate
//! `eldergate-sim` turns it on for the demo): the production binary does not carry rumqttd and
//! the axum 0.7 it pulls in (docs/adr/0006-tools-are-not-the-daemon.md). Without the feature a
//! config with `broker.mode = "embedded"` is refused by validation with [`NOT_IN_THIS_BUILD`],
//! and [`start`] fails with the same words.

use std::net::SocketAddr;

/// Whether this build can start an embedded broker.
pub const AVAILABLE: bool = cfg!(feature = "embedded-broker");

/// What a build without the embedded broker says to `broker.mode = "embedded"`.
pub const NOT_IN_THIS_BUILD: &str = crate::config::NO_EMBEDDED_BROKER;

/// The largest MQTT packet (remaining length) the embedded broker accepts from a client; a
/// bigger one disconnects that client before it is read. It must not exceed the gateway's own
/// incoming limit (`mqtt::options`, `set_max_packet_size`): rumqttd forwards a publish with the
/// same remaining length, and a delivery above the client's limit would make the gateway drop
/// its connection and get the same message again on every reconnect of its persistent session
/// (a poison loop). Checked by a test below.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// Size of one in-memory segment of a filter's log (see [`start`]).
pub const SEGMENT_BYTES: usize = 1024 * 1024;

/// Segments kept per filter, the active one included.
pub const SEGMENTS_PER_FILTER: usize = 2;

// A segment holds at least one largest packet, and one full segment stays behind the active one.
const _: () = assert!(SEGMENT_BYTES >= MAX_PACKET_BYTES && SEGMENTS_PER_FILTER >= 2);

/// Starts rumqttd on its own OS thread (its `start` blocks). Returns once the listener is
/// configured; the thread lives as long as the process.
///
/// Memory is bounded by configuration, not by traffic. rumqttd's router appends every publish
/// to an in-memory log per subscription filter and drops the oldest segment when a filter has
/// `max_segment_count` segments and the active one is over `max_segment_size`; nothing is ever
/// given back otherwise (with 10 × 100 MiB the demo grew ~1 MiB/s under 2,000 heartbeats/s,
/// issue 16). With 2 × 1 MiB a filter holds at most ~2 MiB plus one packet (≤ 256 KiB), and the
/// gateway's few busy filters (alarms, telemetry, taps, staff commands, downlinks) stay under
/// ~20 MiB together. The cost: a subscriber that falls more than one full segment (≥ 1 MiB,
/// some 5,000 alarm events of ~200 bytes) behind on one filter, e.g. a gateway stopped while
/// devices keep publishing, skips the oldest (rumqttd logs "jumping to head"). Alarms have their
/// own filter, so a heartbeat flood never evicts them; and the embedded broker keeps nothing on
/// disk anyway, which is why production uses Mosquitto with persistence. A segment must hold at
/// least one largest packet, hence 1 MiB ≥ [`MAX_PACKET_BYTES`].
///
/// `max_inflight_count` is, in rumqttd, how many packets it reads from one connection in one
/// batch (the QoS 1 window towards each client is fixed at 100 by rumqttd); 100 keeps one batch
/// under 100 × 256 KiB. `max_outgoing_packet_count` bounds one read of QoS 0 messages per filter
/// for a client.
///
/// Per connection, rumqttd 0.20 preallocated ~46 KiB of queues and network buffers, none of it
/// configurable (487 MiB for 10,000 heartbeat devices): the vendored copy grows them on use and
/// gives them back when a link idles (`third_party/rumqttd`, patch and reasons in
/// third_party/README.md, ADR 0019). `next_connection_delay_ms` is rumqttd's pause after every
/// accepted connection: at 1 ms, 10,000 devices took 23–26 s to connect; 0 with the patched
/// broker took 113 s for 10,000 but 10 s for 1,000 (docs/PERFORMANCE.md), cause not isolated,
/// so it stays at rumqttd's sample value.
#[cfg(feature = "embedded-broker")]
pub fn start(listen: SocketAddr) -> anyhow::Result<()> {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = {SEGMENT_BYTES}
max_segment_count = {SEGMENTS_PER_FILTER}
[v4.1]
name = "v4-1"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = {MAX_PACKET_BYTES}
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text)?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    Ok(())
}

/// Caps glibc malloc at two arenas. Call it before the process starts any thread, and only when
/// it will run the embedded broker.
///
/// glibc gives threads their own arenas (up to 8 per core), and what is freed in an arena is
/// reused by the threads allocating from it: with the broker's connection thread, its router and
/// the runtime's workers each in their own arena, every arena keeps its own free holes. With
/// 10,000 connections two arenas hold the same live heap in ~2–4 MiB less (docs/PERFORMANCE.md,
/// "scale and footprint" (1), update 2026-12-01 15:07–16:20); the price is that threads share
/// an arena's lock. Production (Mosquitto holds the connections) keeps glibc's default.
/// Since ADR 0025 the embedded broker's build allocates Rust's memory with jemalloc
/// (src/main.rs); glibc malloc is left with what C code allocates (SQLite's page caches), which
/// the cap still keeps in two arenas.
#[cfg(all(feature = "embedded-broker", target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas() {
    // SAFETY: `mallopt` only sets a parameter of the allocator; M_ARENA_MAX takes any positive
    // value. Called before other threads exist, so no allocation races the change.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Elsewhere (another allocator, or no embedded broker): nothing to do.
#[cfg(not(all(feature = "embedded-broker", target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas() {}

/// Without the `embedded-broker` feature: always [`NOT_IN_THIS_BUILD`]. Config validation refuses
/// `broker.mode = "embedded"` first; this is the last line for a hand-built config.
#[cfg(not(feature = "embedded-broker"))]
pub fn start(listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::bail!("cannot start an embedded broker on {listen}: {NOT_IN_THIS_BUILD}")
}

/// rumqttd logs the ordinary end of every client connection (a device going to sleep, a
/// reconnect, a test's client closing) at ERROR from `rumqttd::server::broker` ("disconnected",
/// "connection-stop", "router-drop"): under a fleet that is thousands of false alarms in the
/// log. This layer drops exactly those three events, counting them in
/// `eldergate_broker_disconnects_total`; every other rumqttd line (a listener that cannot accept,
/// a TLS failure …) stays at its level. Installed by `app::init_logs`.
pub struct QuietBrokerDisconnects;

const BROKER_TARGET: &str = "rumqttd::server::broker";
const ORDINARY_ENDS: [&str; 3] = ["disconnected", "connection-stop", "router-drop"];

#[derive(Default)]
struct Message(Option<String>);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietBrokerDisconnects {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let m = event.metadata();
        if m.target() != BROKER_TARGET || *m.level() != tracing::Level::ERROR {
            return true;
        }
        let mut msg = Message::default();
        event.record(&mut msg);
        let ordinary = msg.0.as_deref().is_some_and(|t| ORDINARY_ENDS.contains(&t));
        if ordinary {
            metrics::counter!("eldergate_broker_disconnects_total").increment(1);
        }
        !ordinary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    #[test]
    fn ordinary_client_disconnects_are_not_logged_as_errors_but_broker_failures_are() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tracing_subscriber::layer::SubscriberExt;
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
            fn on_event(
                &self,
                _: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(QuietBrokerDisconnects)
            .with(Count(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let e = "Network(Io(Kind(ConnectionReset)))";
            tracing::error!(target: "rumqttd::server::broker", error = ?e, "disconnected");
            tracing::error!(target: "rumqttd::server::broker", "connection-stop");
            tracing::error!(target: "rumqttd::server::broker", error = ?e, "router-drop");
            assert_eq!(seen.load(Ordering::Relaxed), 0);
            tracing::error!(target: "rumqttd::server::broker", error = ?e, "Unable to accept socket.");
            tracing::error!(target: "eldergate::ingest", "disconnected");
            tracing::info!(target: "rumqttd::server::broker", "disconnected");
        });
        assert_eq!(seen.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn broker_never_delivers_more_than_the_gateway_client_takes() {
        let broker: BrokerConfig = toml::from_str("mode = \"embedded\"").unwrap();
        let addr = crate::mqtt::broker_addr(&broker).unwrap();
        let client = crate::mqtt::options(&broker, &addr, "gw-test".into()).unwrap();
        assert!(MAX_PACKET_BYTES <= client.max_packet_size());
    }
}

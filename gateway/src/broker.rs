//! The embedded MQTT broker (rumqttd) for the demo and single-box installs.
//!
//! It keeps nothing on disk, so it is for demos and tests of the gateway alone; production uses an
//! external Mosquitto with per-device credentials and ACLs (deploy/mosquitto). It listens on the
//! configured address only (loopback in the demo). See docs/adr/0002-embedded-broker.md.

use std::net::SocketAddr;

/// Starts rumqttd on its own OS thread (its `start` blocks). Returns once the listener is
/// configured; the thread lives as long as the process.
pub fn start(listen: SocketAddr) -> anyhow::Result<()> {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 262144
max_inflight_count = 1000
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

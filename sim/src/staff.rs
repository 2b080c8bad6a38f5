//! A simulated staff member's MQTT client (the demo's duty worker, the tests' and benchmarks'
//! listener): hears `staff/alerts` and `staff/results`, sends `staff/cmd/{staff}`.

use super::mqtt_client::{drive, mqtt_options};
use anyhow::Context;
use eldergate_protocol::payload::{StaffAlert, StaffCommand, StaffCommandResult, StaffVerb};
use eldergate_protocol::topic;
use rumqttc::{AsyncClient, QoS};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

/// What a staff client hears.
#[derive(Debug, Clone)]
pub enum StaffMessage {
    /// An alert change, with when it arrived.
    Alert(Box<StaffAlert>, Instant),
    /// The result of a staff command.
    Result(StaffCommandResult),
}

/// A simulated staff member's MQTT client: hears alerts, sends commands.
#[derive(Clone)]
pub struct StaffClient {
    client: AsyncClient,
    site: String,
    tx: broadcast::Sender<StaffMessage>,
}

impl StaffClient {
    /// Connects and subscribes to `staff/alerts` and `staff/results`.
    pub async fn start(
        host: &str,
        port: u16,
        site: &str,
        client_id: &str,
        credentials: Option<(String, String)>,
    ) -> anyhow::Result<StaffClient> {
        let (client, eventloop) =
            eldergate::mqtt::new_client(mqtt_options(host, port, client_id, &credentials), 10_000);
        let (tx, _) = broadcast::channel(100_000);
        let ready = Arc::new(Notify::new());
        let ready_wait = ready.notified();
        let t2 = tx.clone();
        let results = topic::staff_results(site);
        drive(
            eventloop,
            client.clone(),
            vec![topic::staff_alerts(site), topic::staff_results(site)],
            ready.clone(),
            move |t, payload| {
                if t == results {
                    if let Ok(r) = serde_json::from_slice(payload) {
                        let _ = t2.send(StaffMessage::Result(r));
                    }
                } else if let Ok(a) = serde_json::from_slice(payload) {
                    let _ = t2.send(StaffMessage::Alert(Box::new(a), Instant::now()));
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(30), ready_wait)
            .await
            .context("staff client could not subscribe within 30 s; is the broker up?")?;
        Ok(StaffClient {
            client,
            site: site.to_string(),
            tx,
        })
    }

    /// Everything heard from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StaffMessage> {
        self.tx.subscribe()
    }

    /// Sends a staff command.
    pub async fn command(
        &self,
        cmd: StaffVerb,
        alert_id: i64,
        by: &str,
        note: Option<&str>,
        request_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let c = StaffCommand {
            v: 1,
            cmd,
            alert_id,
            by: Some(by.into()),
            note: note.map(Into::into),
            request_id: request_id.map(Into::into),
        };
        self.client
            .publish(
                topic::staff_cmd(&self.site, by),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&c)?,
            )
            .await?;
        Ok(())
    }
}

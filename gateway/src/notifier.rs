//! Tells staff about alerts: every alert change committed by the journal is published, QoS 1, on
//! `eldergate/v1/{site}/staff/alerts` (everyone) and `…/staff/alerts/{staff_id}` (each person the
//! current escalation step addresses), broadcast to in-process listeners (the SSE stream), and
//! handed to the escalator.
//!
//! Invariants: the notifier only ever sees committed changes (the writer sends after commit); it
//! never blocks the writer (unbounded queue, fed at the rate alarms are committed); a broker that is
//! down delays publication but loses nothing queued, and after a restart every open alert is
//! published again (`change = "republished"`), so a crash between commit and publish cannot
//! swallow an alarm. Receivers dedupe by `alert_id`.

use eldergate_protocol::payload::{AlertState, StaffAlert};
use eldergate_protocol::topic;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{broadcast, mpsc};

/// Runs until the writer drops its sender.
pub async fn run(
    site: String,
    journal: crate::journal::WeakJournal,
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<StaffAlert>,
    live: broadcast::Sender<StaffAlert>,
    escalator: mpsc::UnboundedSender<StaffAlert>,
) {
    let everyone = topic::staff_alerts(&site);
    while let Some(alert) = rx.recv().await {
        let _ = live.send(alert.clone());
        let _ = escalator.send(alert.clone());
        let body = match serde_json::to_vec(&alert) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode staff alert");
                continue;
            }
        };
        if let Err(e) = client
            .publish(everyone.clone(), QoS::AtLeastOnce, false, body.clone())
            .await
        {
            tracing::error!(alert_id = alert.alert_id, error = %e, "staff notification could not be queued");
            continue;
        }
        for person in &alert.notify {
            let _ = client
                .publish(
                    topic::staff_person(&site, person),
                    QoS::AtLeastOnce,
                    false,
                    body.clone(),
                )
                .await;
        }
        // The "notified" stage of the lifecycle: a raise, an escalation or a republication
        // told these people (joins and closing changes are not new notifications).
        if alert.state == AlertState::Raised && alert.change != "joined" {
            journal
                .tell(crate::alerting::Notified {
                    alert_id: alert.alert_id,
                    step: alert.step,
                    to: alert.notify.clone(),
                    at: jiff::Timestamp::now(),
                })
                .await;
        }
        metrics::counter!("eldergate_staff_notifications_total", "change" => alert.change.clone())
            .increment(1);
        tracing::info!(
            alert_id = alert.alert_id,
            kind = %alert.kind,
            change = %alert.change,
            step = alert.step,
            device = %alert.device_id,
            presses = alert.press_count,
            notify = ?alert.notify,
            "staff notified"
        );
    }
}

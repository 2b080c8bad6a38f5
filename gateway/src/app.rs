//! Wires the actors together and runs them until shutdown.
//!
//! ```text
//! MQTT alarm conn ──► Ingest::run_alarm ──► journal alarm lane ─┐
//! MQTT tele conn  ──► Ingest::run_telemetry ─► journal bulk lane ┤
//! HTTP /api       ──────────────────────────► journal alarm lane ┤
//!                                                             Writer (group commit, fsync)
//!                         acks ◄── acker (after commit) ◄────────┤
//!                     Notifier ◄── committed alert changes ◄─────┤
//!               OutboxForwarder ◄── committed seq (watch) ◄──────┘ ──► central store
//! ```
//!
//! Shutdown (SIGTERM, Ctrl-C): stop taking input, let every queued command commit and be acked,
//! let the writer drain, publish the last notifications, then disconnect.

use crate::alerting::supervisor::Seen;
use crate::config::{BrokerMode, Loaded};
use crate::forwarder::OutboxForwarder;
use crate::ingest::Ingest;
use crate::intake::Intake;
use crate::registry::Registry;
use crate::{alerting, broker, http, journal, mqtt, notifier};
use eldergate_protocol::topic;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Installs the Prometheus recorder once per process.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Runs the gateway until `stop` completes.
pub async fn run(loaded: Loaded, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = loaded.config.clone();
    let registry = Arc::new(Registry::from(&loaded));
    let metrics = metrics_handle();

    if cfg.broker.mode == BrokerMode::Embedded {
        let listen = cfg
            .broker
            .listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 1883)));
        broker::start(listen)?;
        tracing::info!(%listen, "embedded MQTT broker started");
    }

    let (journal, mut writer) = journal::open(
        &cfg.data_dir,
        cfg.journal.max_batch,
        Duration::from_secs(cfg.journal.dedupe_window_s),
    )
    .await?;
    writer.provide(registry.clone());
    writer
        .register(alerting::AlertBook::new(registry.clone()))
        .await?;
    let (alert_tx, alert_rx) = mpsc::unbounded_channel();
    let open_at_start = writer
        .state::<alerting::AlertBook>()
        .map(|b| b.open_alerts())
        .unwrap_or_default();
    for open in &open_at_start {
        let mut open = open.clone();
        open.change = "republished".into();
        let _ = alert_tx.send(open);
    }
    let open_of_kind = |kind: &str| -> Vec<String> {
        open_at_start
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.device_id.clone())
            .collect()
    };
    writer.provide(Arc::new(alerting::AlertOutlet(alert_tx)));
    let writer_task = tokio::spawn(writer.run());
    // The roster's cards the journal does not know yet, before any tap can be taken.
    journal.tell(crate::canteen::SeedCards).await;

    let (stop_io_tx, stop_io) = watch::channel(false);
    let (stop_input_tx, stop_input) = watch::channel(false);
    let addr = mqtt::broker_addr(&cfg.broker).map_err(anyhow::Error::msg)?;
    let site = cfg.site_id.clone();

    let status_topic = topic::gateway_status(&site, &cfg.gateway_id);
    let mut alarm_opts = mqtt::options(&cfg.broker, &addr, format!("{}-alarm", cfg.gateway_id))?;
    mqtt::set_last_will(&mut alarm_opts, status_topic.clone(), b"offline");
    let (alarm_in_tx, alarm_in) = mpsc::channel(4096);
    let (alarm_client, alarm_conn) = mqtt::spawn(
        "alarm",
        alarm_opts,
        65_536,
        mqtt::Session {
            subscriptions: vec![
                topic::alarm_filter(&site),
                format!("eldergate/+/{site}/staff/cmd"),
            ],
            on_connect: Some((status_topic.clone(), b"online".to_vec())),
            connected: None,
        },
        Some(alarm_in_tx),
        stop_io.clone(),
    );
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let reconnect_tx = seen_tx.clone();
    let tele_opts = mqtt::options(&cfg.broker, &addr, format!("{}-tele", cfg.gateway_id))?;
    let (tele_in_tx, tele_in) = mpsc::channel(4096);
    let (tele_client, tele_conn) = mqtt::spawn(
        "telemetry",
        tele_opts,
        65_536,
        mqtt::Session {
            subscriptions: vec![topic::telemetry_filter(&site), topic::tap_filter(&site)],
            on_connect: None,
            connected: Some(Box::new(move || {
                let _ = reconnect_tx.send(Seen::Reconnected);
            })),
        },
        Some(tele_in_tx),
        stop_io.clone(),
    );

    let intake = Intake::new(registry.clone(), journal.clone(), seen_tx);
    let heartbeats = tokio::spawn(intake.clone().flush_heartbeats());
    let serial_ports: Vec<_> = cfg
        .serial
        .iter()
        .map(|port| {
            let s = crate::serial::SerialIngest {
                intake: intake.clone(),
                port: port.clone(),
            };
            tokio::spawn(s.run(stop_input.clone()))
        })
        .collect();
    let ingest = Ingest {
        intake: intake.clone(),
    };
    let alarm_ingest = tokio::spawn(ingest.clone().run_alarm(
        alarm_in,
        alarm_client.clone(),
        stop_input.clone(),
    ));
    let tele_ingest = tokio::spawn(ingest.run_telemetry(tele_in, tele_client, stop_input.clone()));

    let (live_tx, _) = broadcast::channel(1024);
    let (escalate_tx, escalate_rx) = mpsc::unbounded_channel();
    let notifier_task = tokio::spawn(notifier::run(
        site.clone(),
        journal.weak(),
        alarm_client,
        alert_rx,
        live_tx.clone(),
        escalate_tx,
    ));
    let background = [
        tokio::spawn(alerting::escalator::run(
            registry.clone(),
            journal.clone(),
            escalate_rx,
        )),
        tokio::spawn(alerting::supervisor::run(
            registry.clone(),
            journal.clone(),
            seen_rx,
            open_of_kind("device_offline"),
            open_of_kind("low_battery"),
        )),
        tokio::spawn(alerting::checkin::run(registry.clone(), journal.clone())),
        tokio::spawn(alerting::webhooks::run(journal.clone())),
        tokio::spawn(alerting::journal_watch::run(journal.clone())),
    ];

    let forwarder = tokio::spawn(
        OutboxForwarder {
            journal: journal.clone(),
            url: cfg.central.url.clone(),
            data_dir: cfg.data_dir.clone(),
            gateway_id: cfg.gateway_id.clone(),
            site_id: site.clone(),
            batch_size: cfg.central.batch_size,
            retry_max: Duration::from_secs(cfg.central.retry_max_s),
        }
        .run(stop_input.clone()),
    );

    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on http.listen {}: {e}", cfg.http.listen))?;
    tracing::info!(listen = %cfg.http.listen, "HTTP API listening");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        http::Api {
            journal: journal.clone(),
            registry: registry.clone(),
            metrics,
            live: live_tx,
            limits: http::Limits::new(&cfg.http),
            shutdown: shutdown.clone(),
        },
    ));
    tracing::info!(gateway = %cfg.gateway_id, site = %site, "gateway running");

    stop.await;
    tracing::info!("shutting down: finishing queued commits and acks");
    let _ = stop_input_tx.send(true);
    shutdown.cancel();
    let _ = alarm_ingest.await;
    let _ = tele_ingest.await;
    for port in serial_ports {
        let _ = port.await;
    }
    heartbeats.abort();
    let _ = heartbeats.await;
    intake.flush_once().await;
    drop(intake);
    let _ = http_task.await;
    let _ = forwarder.await;
    for task in background {
        task.abort();
        let _ = task.await;
    }
    drop(journal);
    let _ = writer_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(3), notifier_task).await;
    let _ = stop_io_tx.send(true);
    let _ = alarm_conn.await;
    let _ = tele_conn.await;
    tracing::info!("gateway stopped cleanly");
    Ok(())
}

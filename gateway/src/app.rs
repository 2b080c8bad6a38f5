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
//! Shutdown (SIGTERM, Ctrl-C), with `tokio_util`'s `CancellationToken`s and `TaskTracker`s in
//! this order: stop taking input (`stop_input`: MQTT handlers, serial ports, HTTP and every SSE
//! stream, the forwarder), let every queued operation commit and be acked (the input tracker
//! drains), the writer drains (the last `Journal` handle is dropped), the last notifications
//! go out, then the MQTT connections disconnect (`stop_io`).
//!
//! Supervision: every task the alarm path needs is *vital*. If one panics or ends before
//! shutdown was asked for, `/healthz` turns 503 with the reason, the reason is logged, and
//! [`run`] returns an error so the process exits non-zero and the service manager
//! (`Restart=always`) starts it again with state rebuilt from the journal (docs/adr/0008).
//! A panic inside one journal operation does not get this far: the writer rolls that operation
//! back and goes on.

use crate::alerting::supervisor::Seen;
use crate::config::{BrokerMode, Loaded};
use crate::forwarder::OutboxForwarder;
use crate::health::{DiskGuard, Health};
use crate::ingest::Ingest;
use crate::intake::Intake;
use crate::registry::Registry;
use crate::{alerting, broker, http, journal, mqtt, notifier};
use eldergate_protocol::topic;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// Logs to stderr: `RUST_LOG` if set, else `default` (shared by the `eldergate` and
/// `eldergate-sim` binaries).
pub fn init_logs(default: &str) {
    init_logs_as(default, crate::config::LogFormat::Human);
}

/// [`init_logs`] in the format the config names (`[log] format`).
pub fn init_logs_as(default: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let fmt = match format {
        // Colours only on a terminal: under systemd (journald), in a log file or a pipe they
        // were escape codes in every line.
        crate::config::LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        crate::config::LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(crate::broker::QuietBrokerDisconnects)
        .with(filter)
        .with(fmt)
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Why the gateway must stop: a vital task ended before shutdown was asked for.
type Fatal = mpsc::UnboundedSender<String>;

/// Spawns a vital task on `tracker`: if it panics or ends while `running` is not cancelled, the
/// reason goes to `fatal`.
fn vital<F>(
    tracker: &TaskTracker,
    name: &'static str,
    fut: F,
    running: &CancellationToken,
    fatal: &Fatal,
) where
    F: Future<Output = ()> + Send + 'static,
{
    vital_on(
        &tokio::runtime::Handle::current(),
        tracker,
        name,
        fut,
        running,
        fatal,
    )
}

/// [`vital`] with the task run by `on` (the alarm path's runtime, [`AlarmPath`]); it is watched
/// from the caller's runtime.
fn vital_on<F>(
    on: &tokio::runtime::Handle,
    tracker: &TaskTracker,
    name: &'static str,
    fut: F,
    running: &CancellationToken,
    fatal: &Fatal,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let inner = on.spawn(fut);
    let (running, fatal) = (running.clone(), fatal.clone());
    tracker.spawn(async move {
        let why = match inner.await {
            Ok(()) if running.is_cancelled() => return,
            Ok(()) => format!("{name} stopped unexpectedly"),
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("{name} panicked: {what}")
            }
            Err(_) => return,
        };
        let _ = fatal.send(why);
    });
}

/// The alarm path's own thread (docs/adr/0026): a tokio runtime of one worker thread for the
/// tasks every device message passes through — the MQTT event loops, the ingest handlers and
/// their ackers, the serial ports, the journal writer, device supervision, the notifier and the
/// escalator. On the shared runtime (two workers) each message woke tasks on the other worker
/// again and again (event loop → handler → writer → acker → event loop), each a futex wake and
/// a context switch; on one worker those hand-offs are queue pushes, and the console, the HTTP
/// API, the forwarder and retention, on the main runtime, cannot take the worker it needs.
/// Nothing on this runtime blocks its worker: SQLite runs on sqlx's worker thread and in
/// `spawn_blocking`, file work in `spawn_blocking`.
///
/// A multi-threaded runtime with one worker (what was measured, `TOKIO_WORKER_THREADS=1`): it
/// schedules like the main runtime and needs no thread of ours to drive it.
struct AlarmPath {
    /// Taken only by `drop`.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl AlarmPath {
    fn start() -> anyhow::Result<AlarmPath> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("alarm-path")
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the alarm path's runtime: {e}"))?;
        Ok(AlarmPath {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }
}

impl Drop for AlarmPath {
    fn drop(&mut self) {
        // Dropped from async code: a runtime may not block there, so it is shut down without
        // waiting (whatever is left on it is dropped; at a clean stop nothing is).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs the gateway until `stop` completes (Ok) or a vital task dies (Err).
pub async fn run(loaded: Loaded, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let registry = Arc::new(Registry::from(&loaded));
    // The devices, staff and residents as read are in the registry now; kept in `loaded` for the
    // whole run they were one more copy of each (~2 MB at 10,000 devices).
    let Loaded {
        config: cfg,
        vitals,
        ..
    } = loaded;
    let metrics = metrics_handle();

    if cfg.broker.mode == BrokerMode::Embedded {
        let listen = cfg
            .broker
            .listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 1883)));
        broker::start(listen)?;
        tracing::info!(%listen, "embedded MQTT broker started");
    }

    let alarm_path = AlarmPath::start()?;
    let on_alarm_path = alarm_path.handle.clone();
    let (journal, mut writer) = journal::open(
        &cfg.data_dir,
        cfg.journal.max_batch,
        Duration::from_secs(cfg.journal.dedupe_window_s),
    )
    .await?;
    let disk = Arc::new(DiskGuard::new(
        &cfg.data_dir,
        cfg.journal.reserve_mb,
        cfg.journal.low_disk_mb,
    ));
    let health = Arc::new(Health::new(disk.clone()));
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    let releaser = disk.clone();
    let journal_path = journal.start().path.clone();
    let corrupt = fatal_tx.clone();
    writer.on_commit_failure(Box::new(move |e| {
        let text = e.to_string();
        if text.contains("full") {
            releaser.release(e);
        }
        if text.contains("malformed") || text.contains("not a database") {
            // The next start sets the journal aside and begins a new epoch (ADR 0007).
            journal::mark_if_corrupt(&journal_path, &text);
            let _ = corrupt.send(format!("the journal is corrupt: {text}"));
        }
    }));
    writer.provide(registry.clone());
    writer.provide(Arc::new(vitals));
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

    // `running` is cancelled when shutdown starts: a vital task ending after that is expected.
    let running = CancellationToken::new();
    let stop_input = CancellationToken::new();
    let stop_io = CancellationToken::new();
    let input = TaskTracker::new();
    let core = TaskTracker::new();
    let io = TaskTracker::new();

    vital_on(
        &on_alarm_path,
        &core,
        "journal writer",
        writer.run(),
        &running,
        &fatal_tx,
    );
    // The roster's cards the journal does not know yet, before any tap can be taken.
    journal.tell(crate::canteen::SeedCards).await;

    let addr = mqtt::broker_addr(&cfg.broker).map_err(anyhow::Error::msg)?;
    let site = cfg.site_id.clone();

    let status_topic = topic::gateway_status(&site, &cfg.gateway_id);
    let mut alarm_opts = mqtt::options(&cfg.broker, &addr, format!("{}-alarm", cfg.gateway_id))?;
    mqtt::set_last_will(&mut alarm_opts, status_topic.clone(), b"offline");
    let (alarm_in_tx, alarm_in) = mqtt::handoff("alarm");
    // The event loops run on the alarm path (`mqtt::spawn` spawns on the runtime entered).
    let entered = on_alarm_path.enter();
    let (alarm_client, alarm_conn) = mqtt::spawn(
        "alarm",
        alarm_opts,
        65_536,
        mqtt::Session {
            subscriptions: vec![topic::alarm_filter(&site), topic::staff_cmd_filter(&site)],
            on_connect: Some((status_topic.clone(), b"online".to_vec())),
            connected: None,
            up: Some(health.alarm_mqtt.clone()),
        },
        Some(alarm_in_tx),
        stop_io.clone(),
    );
    drop(entered);
    vital(
        &io,
        "alarm MQTT connection",
        async move {
            let _ = alarm_conn.await;
        },
        &running,
        &fatal_tx,
    );
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let reconnect_tx = seen_tx.clone();
    let tele_opts = mqtt::options(&cfg.broker, &addr, format!("{}-tele", cfg.gateway_id))?;
    let (tele_in_tx, tele_in) = mqtt::handoff("telemetry");
    let entered = on_alarm_path.enter();
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
            up: Some(health.tele_mqtt.clone()),
        },
        Some(tele_in_tx),
        stop_io.clone(),
    );
    drop(entered);
    vital(
        &io,
        "telemetry MQTT connection",
        async move {
            let _ = tele_conn.await;
        },
        &running,
        &fatal_tx,
    );

    let intake = Intake::new(registry.clone(), journal.clone(), seen_tx).with_disk(disk.clone());
    let heartbeats = tokio::spawn(intake.clone().flush_heartbeats());
    for port in &cfg.serial {
        let s = crate::serial::SerialIngest {
            intake: intake.clone(),
            port: port.clone(),
        };
        vital_on(
            &on_alarm_path,
            &input,
            "serial port",
            s.run(stop_input.clone()),
            &running,
            &fatal_tx,
        );
    }
    let ingest = Ingest {
        intake: intake.clone(),
    };
    vital_on(
        &on_alarm_path,
        &input,
        "alarm ingest",
        ingest
            .clone()
            .run_alarm(alarm_in, alarm_client.clone(), stop_input.clone()),
        &running,
        &fatal_tx,
    );
    vital_on(
        &on_alarm_path,
        &input,
        "telemetry ingest",
        ingest.run_telemetry(tele_in, tele_client, stop_input.clone()),
        &running,
        &fatal_tx,
    );

    let (live_tx, _) = broadcast::channel(1024);
    let (escalate_tx, escalate_rx) = mpsc::unbounded_channel();
    // Ends after the writer (its outlet closes): on the core tracker, vital like the writer.
    vital_on(
        &on_alarm_path,
        &core,
        "staff notifier",
        notifier::run(
            site.clone(),
            journal.weak(),
            alarm_client,
            alert_rx,
            live_tx.clone(),
            escalate_tx,
        ),
        &running,
        &fatal_tx,
    );
    // The watchers run until shutdown; the escalator and supervision are vital.
    let watchers = CancellationToken::new();
    let background = TaskTracker::new();
    vital_on(
        &on_alarm_path,
        &background,
        "escalator",
        stop_with(
            watchers.clone(),
            alerting::escalator::run(registry.clone(), journal.clone(), escalate_rx),
        ),
        &running,
        &fatal_tx,
    );
    vital_on(
        &on_alarm_path,
        &background,
        "device supervision",
        stop_with(
            watchers.clone(),
            alerting::supervisor::run(
                registry.clone(),
                journal.clone(),
                seen_rx,
                open_of_kind("device_offline"),
                open_of_kind("low_battery"),
            ),
        ),
        &running,
        &fatal_tx,
    );
    vital(
        &background,
        "daily check-in",
        done_or_stopped(
            watchers.clone(),
            alerting::checkin::run(registry.clone(), journal.clone()),
        ),
        &running,
        &fatal_tx,
    );
    vital(
        &background,
        "webhook sender",
        done_or_stopped(
            watchers.clone(),
            alerting::webhooks::run(
                journal.clone(),
                alerting::channels::Channels::from_config(&cfg),
            ),
        ),
        &running,
        &fatal_tx,
    );
    vital(
        &background,
        "disk guard",
        disk.clone()
            .watch(journal.clone(), cfg.gateway_id.clone(), watchers.clone()),
        &running,
        &fatal_tx,
    );
    tracker_retention(&background, &journal, &cfg, &disk, &watchers);
    vital(
        &background,
        "journal watch",
        done_or_stopped(
            watchers.clone(),
            alerting::journal_watch::run(journal.clone()),
        ),
        &running,
        &fatal_tx,
    );

    vital(
        &input,
        "outbox forwarder",
        OutboxForwarder {
            journal: journal.clone(),
            url: cfg.central.url.clone(),
            data_dir: cfg.data_dir.clone(),
            ca_file: cfg.central.ca_file.clone(),
            gateway_id: cfg.gateway_id.clone(),
            site_id: site.clone(),
            batch_size: cfg.central.batch_size,
            retry_max: Duration::from_secs(cfg.central.retry_max_s),
        }
        .run(stop_input.clone()),
        &running,
        &fatal_tx,
    );

    let auth = crate::auth::Auth {
        store: crate::auth::AccountStore::open(&cfg.data_dir)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the accounts database in data_dir: {e}"))?,
        registry: registry.clone(),
        throttle: Default::default(),
        idle_s: i64::try_from(cfg.http.session_idle_s).unwrap_or(i64::MAX),
        max_s: i64::try_from(cfg.http.session_max_s).unwrap_or(i64::MAX),
        secure_cookies: cfg.http.secure_cookies(),
        trusted_proxies: cfg
            .http
            .behind_proxy
            .then(|| cfg.http.trusted_proxies.clone()),
    };
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(cert), Some(key)) => {
            let (config, current) = crate::tls::server_config(cert, key)
                .map_err(|e| anyhow::anyhow!("cannot serve HTTPS: {}: {e}", e.key))?;
            if cfg.http.tls_reload_s > 0 {
                background.spawn(crate::tls::watch_server_cert(
                    cert.clone(),
                    key.clone(),
                    current,
                    Duration::from_secs(cfg.http.tls_reload_s),
                    stop_input.clone(),
                ));
            }
            Some(config)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on http.listen {}: {e}", cfg.http.listen))?;
    tracing::info!(listen = %cfg.http.listen, https = tls.is_some(), "HTTP API listening");
    vital(
        &input,
        "HTTP server",
        http::serve(
            listener,
            http::Api {
                journal: journal.clone(),
                registry: registry.clone(),
                metrics,
                live: live_tx,
                limits: http::Limits::new(&cfg.http),
                shutdown: stop_input.clone(),
                health: health.clone(),
                auth,
            },
            tls,
        ),
        &running,
        &fatal_tx,
    );
    if let Some(interval) = crate::service::watchdog_interval() {
        background.spawn(crate::service::watchdog(
            journal.clone(),
            health.clone(),
            interval,
            stop_input.clone(),
        ));
    }
    health
        .started_up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    crate::service::notify_ready();
    tracing::info!(gateway = %cfg.gateway_id, site = %site, "gateway running");

    let failure = tokio::select! {
        _ = stop => None,
        Some(why) = fatal_rx.recv() => Some(why),
    };
    if let Some(why) = failure {
        health.set_fatal(why.clone());
        metrics::counter!("eldergate_vital_task_failures_total").increment(1);
        tracing::error!(reason = %why, "a vital task failed: alarms cannot be taken; exiting for the service manager to restart the gateway");
        // Long enough for a monitor polling /healthz to see it red.
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::bail!("vital task failed: {why}");
    }
    crate::service::notify_stopping();
    tracing::info!("shutting down: finishing queued commits and acks");
    running.cancel();
    stop_input.cancel();
    input.close();
    input.wait().await;
    heartbeats.abort();
    let _ = heartbeats.await;
    intake.flush_once().await;
    drop(intake);
    watchers.cancel();
    background.close();
    background.wait().await;
    drop(journal);
    core.close();
    // The writer drains everything queued; the notifier then publishes the last changes (a
    // broker that is down cannot hold the shutdown for long).
    if tokio::time::timeout(Duration::from_secs(30), core.wait())
        .await
        .is_err()
    {
        tracing::warn!("the writer or the notifier did not finish within 30 s; stopping anyway");
    }
    stop_io.cancel();
    io.close();
    io.wait().await;
    drop(alarm_path);
    tracing::info!("gateway stopped cleanly");
    Ok(())
}

/// Runs `fut` (which may finish early, e.g. a check-in that is switched off) and then waits
/// for `stop`: only a panic counts as a failure.
async fn done_or_stopped<F: Future<Output = ()>>(stop: CancellationToken, fut: F) {
    stop_with(stop.clone(), fut).await;
    stop.cancelled().await;
}

/// Runs `fut` until `stop` is cancelled (for watchers that loop forever).
async fn stop_with<F: Future<Output = ()>>(stop: CancellationToken, fut: F) {
    tokio::select! {
        _ = fut => {}
        _ = stop.cancelled() => {}
    }
}

/// Pruning of what the central store already has (src/retention.rs). Not vital: if it stops,
/// the journal only grows, which the disk guard watches.
fn tracker_retention(
    tracker: &TaskTracker,
    journal: &journal::Journal,
    cfg: &crate::config::Config,
    disk: &Arc<DiskGuard>,
    stop: &CancellationToken,
) {
    let retention =
        crate::retention::Retention::from_config(&cfg.retention, cfg.journal.dedupe_window_s);
    tracker.spawn(crate::retention::run(
        journal.clone(),
        retention,
        Duration::from_secs(cfg.retention.interval_s),
        disk.clone(),
        stop.clone(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vital_task_that_panics_or_ends_early_is_reported_and_one_that_ends_at_shutdown_is_not(
    ) {
        let tracker = TaskTracker::new();
        let running = CancellationToken::new();
        let (fatal, mut reasons) = mpsc::unbounded_channel();
        vital(
            &tracker,
            "writer",
            async { panic!("boom") },
            &running,
            &fatal,
        );
        let why = reasons.recv().await.expect("a reason");
        assert!(why.contains("writer panicked: boom"), "{why}");
        vital(&tracker, "ingest", async {}, &running, &fatal);
        let why = reasons.recv().await.expect("a reason");
        assert_eq!(why, "ingest stopped unexpectedly");
        running.cancel();
        vital(&tracker, "forwarder", async {}, &running, &fatal);
        tracker.close();
        tracker.wait().await;
        assert!(
            reasons.try_recv().is_err(),
            "an end after shutdown began is expected"
        );
    }
}

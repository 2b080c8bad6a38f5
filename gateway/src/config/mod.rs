//! The gateway's configuration: one TOML file plus `ELDERGATE__…` environment overrides.
//!
//! Guarantees:
//! - Unknown keys are rejected, all of them at once, each with its key path (we collect them with
//!   `serde_ignored` instead of `deny_unknown_fields`, which would stop at the first).
//! - [`load`] either returns a config in which every reference resolves (devices → residents and
//!   locations, escalation → staff) or the complete list of [`Problem`]s; `eldergate check-config`
//!   prints that list.
//! - No secret has a default: an external broker needs a username and password (from the file or,
//!   better, `ELDERGATE__BROKER__PASSWORD`) unless `anonymous = true` is written down explicitly.
//!
//! Environment overrides: `ELDERGATE__BROKER__URL=mqtt://…` sets `broker.url`; segments are
//! separated by a double underscore and lowercased.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eldergate_protocol::topic::is_valid_id;

pub use crate::community::{
    Device as DeviceConfig, DeviceKind, Link, Resident, StaffMember as StaffConfig,
};
pub use crate::problem::Problem;

mod broker_url;
mod links;
pub use broker_url::{parse_broker_url, BrokerAddr};

/// Why a build without the `embedded-broker` feature refuses `broker.mode = "embedded"`.
pub const NO_EMBEDDED_BROKER: &str = "this build has no embedded broker; build with --features embedded-broker or use an external broker (mode = \"external\")";

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "ELDERGATE__";

/// The whole configuration, as written in the file.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Community (site) id: the `{site}` in every topic.
    pub site_id: String,
    /// This gateway's id: with `seq`, the key of every event at the central store.
    pub gateway_id: String,
    /// Where the journal lives (`journal.db`).
    pub data_dir: PathBuf,
    /// IANA time zone of the community, for local-time rules and reports.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// HTTP API.
    #[serde(default)]
    pub http: HttpConfig,
    /// MQTT broker.
    pub broker: BrokerConfig,
    /// Central store the outbox forwards to.
    pub central: CentralConfig,
    /// Journal tuning.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Optional CSV of devices (`device_id,kind,link,resident_id,location,heartbeat_s`), relative
    /// to the config file.
    #[serde(default)]
    pub device_csv: Option<PathBuf>,
    /// Devices written inline.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Optional CSV of staff (`staff_id,name,role,grid,phone`), relative to the config file.
    #[serde(default)]
    pub staff_csv: Option<PathBuf>,
    /// Staff written inline.
    #[serde(default)]
    pub staff: Vec<StaffConfig>,
    /// Optional CSV of residents (the community roster: `resident_id,name,gender,birth_date,
    /// statuses,building,unit,room,grid,phone,card_id,emergency_contact`), relative to the file.
    #[serde(default)]
    pub residents_csv: Option<PathBuf>,
    /// Who is told about alerts, and when, per priority.
    #[serde(default)]
    pub escalation: EscalationConfig,
    /// Webhooks (SMS/voice gateway, WeCom / DingTalk robots) per person or role.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The console's address as staff reach it, e.g. `https://eldergate.community-0001.example`;
    /// robot messages link to `{console_url}/console/alerts/{id}`. No link when absent.
    #[serde(default)]
    pub console_url: Option<String>,
    /// Device supervision: heartbeats, last wills, battery.
    #[serde(default)]
    pub supervision: SupervisionConfig,
    /// Daily check-in of residents living alone.
    #[serde(default)]
    pub checkin: CheckinConfig,
    /// Serial ports (receiver dongles, RS-485 buses), each carrying many devices.
    #[serde(default)]
    pub serial: Vec<SerialPortConfig>,
    /// The canteen (meal settlement by resident card).
    #[serde(default)]
    pub canteen: Option<CanteenConfig>,
    /// Health kiosks (两测): rules file, session length, blood-pressure averaging window.
    #[serde(default)]
    pub vitals: VitalsConfig,
    /// How long the journal keeps what the central store already has (src/retention.rs).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
}

/// Health-kiosk settings (`[vitals]`).
#[derive(Debug, Clone, Deserialize)]
pub struct VitalsConfig {
    /// Thresholds and trends, relative to the config file (see deploy/vitals/default.toml);
    /// the built-in defaults (that file) when absent.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// A card tapped on a kiosk binds its readings to the resident for this long (or until
    /// the next tap), seconds.
    #[serde(default = "default_vitals_window")]
    pub session_s: u64,
    /// A resident's blood-pressure readings within this many seconds are averaged.
    #[serde(default = "default_vitals_window")]
    pub bp_window_s: u64,
}

impl Default for VitalsConfig {
    fn default() -> Self {
        VitalsConfig {
            rules: None,
            session_s: default_vitals_window(),
            bp_window_s: default_vitals_window(),
        }
    }
}

fn default_vitals_window() -> u64 {
    300
}

/// Retention of forwarded events and local records, in days (0 = kept forever). Nothing the
/// central store does not have is ever pruned; no age may be below two days nor the dedupe
/// window.
#[derive(Debug, Clone, Deserialize)]
pub struct RetentionConfig {
    /// Routine events (readings, telemetry), days after forwarding; pruned first.
    #[serde(default = "default_routine_days")]
    pub routine_days: u32,
    /// Alarms, alert audit trail, money and roster events, days after forwarding (0 = forever).
    #[serde(default = "default_records_days")]
    pub records_days: u32,
    /// Dead letters, days (0 = forever).
    #[serde(default = "default_dead_letter_days")]
    pub dead_letter_days: u32,
    /// Delivered webhook rows, days (0 = forever).
    #[serde(default = "default_webhook_days")]
    pub webhook_days: u32,
    /// Seconds between pruning runs (every minute at most while the disk is low).
    #[serde(default = "default_retention_interval")]
    pub interval_s: u64,
}

fn default_routine_days() -> u32 {
    7
}
fn default_records_days() -> u32 {
    400
}
fn default_dead_letter_days() -> u32 {
    90
}
fn default_webhook_days() -> u32 {
    30
}
fn default_retention_interval() -> u64 {
    3600
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            routine_days: default_routine_days(),
            records_days: default_records_days(),
            dead_letter_days: default_dead_letter_days(),
            webhook_days: default_webhook_days(),
            interval_s: default_retention_interval(),
        }
    }
}

/// Log output (`[log]`). The level comes from `RUST_LOG`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogConfig {
    /// `human` (the default: one readable line per event) or `json` (one JSON object per line,
    /// for journald/Loki/ELK).
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Canteen settings.
#[derive(Debug, Clone, Deserialize)]
pub struct CanteenConfig {
    /// Tariff and subsidy rule file, relative to the config file (see deploy/canteen/).
    pub rules: PathBuf,
    /// A second tap of the same card within this many seconds is the same meal.
    #[serde(default = "default_double_tap")]
    pub double_tap_s: u64,
    /// File holding the site secret card MACs are derived from (docs/CANTEEN.md "Card MAC"),
    /// relative to the config file; env `ELDERGATE_CANTEEN__CARD_MAC_SECRET_FILE`. Without it a
    /// MAC sent by a reader is counted as unchecked.
    #[serde(default)]
    pub card_mac_secret_file: Option<PathBuf>,
}

fn default_double_tap() -> u64 {
    60
}

/// One serial port (`[[serial]]`): a receiver dongle or RS-485 bus carrying many devices, speaking
/// protocol/SPEC.md.
#[derive(Debug, Clone, Deserialize)]
pub struct SerialPortConfig {
    /// Device path, e.g. `/dev/serial/by-id/usb-…` (a stable name survives unplug/replug).
    pub port: String,
    /// Baud rate (8N1), one of [`SERIAL_BAUDS`]; 115200 when absent.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

/// The baud rates a `[[serial]]` port may use: the standard UART rates (protocol/SPEC.md §1).
pub const SERIAL_BAUDS: [u32; 11] = [
    1_200, 2_400, 4_800, 9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
];

fn default_baud() -> u32 {
    115_200
}

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}

/// HTTP API settings, including the bounds that keep one client (or a thousand) from taking the
/// gateway's memory and descriptors.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Address to listen on. Beyond loopback only with TLS (`tls_cert` and `tls_key`) or behind
    /// a declared reverse proxy (`behind_proxy` with `trusted_proxies`).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Open connections at most; one more is answered 503 and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Live alert streams (SSE) at most; one more is answered 503. Kept below `max_connections`
    /// so that health checks, metrics and staff actions still get a connection.
    #[serde(default = "default_max_sse_clients")]
    pub max_sse_clients: usize,
    /// A client has this long to send a request's headers (also the most a kept-alive
    /// connection may sit between requests).
    #[serde(default = "default_header_read_timeout_s")]
    pub header_read_timeout_s: u64,
    /// A connection on which nothing was read or written for this long is closed (a client
    /// that stops reading a live stream, or stalls in the middle of a body).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// At shutdown, requests in flight get this long to finish; then their connections close.
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    /// Largest roster import body, bytes (a community's few thousand rows are well below 1 MiB).
    #[serde(default = "default_roster_max_bytes")]
    pub roster_max_bytes: usize,
    /// The gateway is behind a reverse proxy that terminates TLS (nginx, caddy): cookies get
    /// `Secure`, and the client address is the last `X-Forwarded-For` entry of a request that
    /// came from one of `trusted_proxies` (from any other peer the header is ignored).
    #[serde(default)]
    pub behind_proxy: bool,
    /// Addresses of the reverse proxies whose `X-Forwarded-For` is believed (login throttling,
    /// loopback-only routes). Needed with `behind_proxy` when `listen` is beyond loopback;
    /// loopback peers are trusted when it is empty.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// PEM certificate chain: with `tls_key`, the gateway serves HTTPS itself (rustls) and
    /// cookies get `Secure`. Relative to the config file.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1). Relative to the config file.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How often `tls_cert` and `tls_key` are looked at for a renewed pair, seconds (taken
    /// without a restart; 0: never, a renewal then needs a restart).
    #[serde(default = "default_tls_reload_s")]
    pub tls_reload_s: u64,
    /// A console session ends after this long without a request, seconds.
    #[serde(default = "default_session_idle_s")]
    pub session_idle_s: u64,
    /// A console session ends this long after login whatever happens, seconds.
    #[serde(default = "default_session_max_s")]
    pub session_max_s: u64,
}

fn default_tls_reload_s() -> u64 {
    60
}

fn default_session_idle_s() -> u64 {
    30 * 60
}

fn default_session_max_s() -> u64 {
    12 * 3600
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_connections() -> usize {
    256
}

fn default_max_sse_clients() -> usize {
    64
}

fn default_header_read_timeout_s() -> u64 {
    10
}

fn default_idle_timeout_s() -> u64 {
    60
}

fn default_shutdown_grace_s() -> u64 {
    5
}

fn default_roster_max_bytes() -> usize {
    4 << 20
}

impl HttpConfig {
    /// Whether the gateway terminates TLS itself.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Whether cookies get `Secure`: the browser reaches the gateway over HTTPS, its own or
    /// the proxy's.
    pub fn secure_cookies(&self) -> bool {
        self.tls() || self.behind_proxy
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            max_connections: default_max_connections(),
            max_sse_clients: default_max_sse_clients(),
            header_read_timeout_s: default_header_read_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            shutdown_grace_s: default_shutdown_grace_s(),
            roster_max_bytes: default_roster_max_bytes(),
            behind_proxy: false,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_reload_s: default_tls_reload_s(),
            session_idle_s: default_session_idle_s(),
            session_max_s: default_session_max_s(),
        }
    }
}

/// Embedded broker (demo) or an external one (production: Mosquitto with per-device ACLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// Start rumqttd inside the gateway process.
    Embedded,
    /// Connect to `broker.url`.
    External,
}

/// MQTT broker settings.
#[derive(Debug, Clone, Deserialize)]
pub struct BrokerConfig {
    /// `embedded` or `external`.
    pub mode: BrokerMode,
    /// Embedded broker: address to listen on.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// External broker: `mqtt://host:port` or `mqtts://host:port`.
    #[serde(default)]
    pub url: Option<String>,
    /// External broker username.
    #[serde(default)]
    pub username: Option<String>,
    /// External broker password; prefer `ELDERGATE__BROKER__PASSWORD` or `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the broker password (relative to the config file), e.g. a systemd
    /// credential; read at load into `password` (config/secrets.rs).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Allow connecting without credentials (test brokers only). Must be written explicitly.
    #[serde(default)]
    pub anonymous: bool,
    /// PEM CA bundle for `mqtts://`; the system roots when absent. Setting it (or a client
    /// certificate) with an `mqtt://` url is refused: TLS configured means TLS or nothing.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for brokers that require one (`require_certificate true`);
    /// needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1); keep it 0600.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u16,
    /// Most outgoing MQTT packets (device acks, PUBACKs, alerts) written to the socket before one
    /// flush: what is waiting after a group commit goes out in one `write` instead of one each.
    /// Only packets already queued are taken, nothing waits for a batch to fill. 1 = a flush per
    /// packet (rumqttc's own behaviour). Range 1..=1000. third_party/README.md, docs/PERFORMANCE.md.
    #[serde(default = "default_write_batch")]
    pub write_batch: u16,
}

fn default_keep_alive() -> u16 {
    15
}

fn default_write_batch() -> u16 {
    64
}

/// Central store settings.
#[derive(Debug, Clone, Deserialize)]
pub struct CentralConfig {
    /// `sqlite:path` (embedded, relative to data_dir) or `postgres://user@host/db` (the
    /// password from `password`/`password_file`, not the URL).
    pub url: String,
    /// The central role's password; prefer `ELDERGATE__CENTRAL__PASSWORD` or `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the central role's password (relative to the config file), as written by
    /// `eldergate central add-gateway`; put into `url` at load (config/secrets.rs).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Events per forwarded batch.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Longest pause between retries, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_s: u64,
    /// PEM CA bundle that signed the central PostgreSQL's certificate (relative to the config
    /// file). With it and no `sslmode` in the URL, TLS is `verify-full`. See crate::central_link.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_batch() -> u32 {
    5000
}
fn default_retry_max() -> u64 {
    10
}

/// Journal tuning.
#[derive(Debug, Clone, Deserialize)]
pub struct JournalConfig {
    /// Most commands committed in one group commit.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a (device, device sequence) is remembered for dedupe, in seconds.
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window_s: u64,
    /// Space kept free in `data_dir` for alarms and money, MiB: a reserve file of this size is
    /// released when a commit fails for lack of space (0 = none).
    #[serde(default = "default_reserve_mb")]
    pub reserve_mb: u64,
    /// Below this much free space in `data_dir`, MiB, heartbeats and routine data are refused
    /// (counted, logged) and staff are alerted.
    #[serde(default = "default_low_disk_mb")]
    pub low_disk_mb: u64,
}

fn default_reserve_mb() -> u64 {
    64
}

fn default_low_disk_mb() -> u64 {
    256
}

fn default_dedupe_window() -> u64 {
    86_400
}

fn default_max_batch() -> usize {
    2048
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_batch: default_max_batch(),
            dedupe_window_s: default_dedupe_window(),
            reserve_mb: default_reserve_mb(),
            low_disk_mb: default_low_disk_mb(),
        }
    }
}

/// Escalation ladders per priority. A ladder entry names who to tell: `grid_worker` (the
/// resident's grid worker, found via resident → grid), `role:NAME`, or a staff id.
#[derive(Debug, Clone, Deserialize)]
pub struct EscalationConfig {
    /// SOS presses.
    #[serde(default = "ladder_high")]
    pub high: Ladder,
    /// Device offline, missed check-in.
    #[serde(default = "ladder_medium")]
    pub medium: Ladder,
    /// Low battery.
    #[serde(default = "ladder_low")]
    pub low: Ladder,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            high: ladder_high(),
            medium: ladder_medium(),
            low: ladder_low(),
        }
    }
}

/// Steps of one ladder, each fired once (in order) while the alert is unacknowledged.
#[derive(Debug, Clone, Deserialize)]
pub struct Ladder {
    /// Steps by `after_s` (seconds after the alert was raised), increasing.
    pub steps: Vec<LadderStep>,
    /// After the last step, tell the last step's people again every this many seconds.
    #[serde(default)]
    pub repeat_s: Option<u64>,
}

/// One step of a ladder.
#[derive(Debug, Clone, Deserialize)]
pub struct LadderStep {
    /// Seconds after the alert was raised.
    pub after_s: u64,
    /// Who: `grid_worker`, `role:NAME`, or staff ids.
    pub notify: Vec<String>,
}

fn step(after_s: u64, notify: &[&str]) -> LadderStep {
    LadderStep {
        after_s,
        notify: notify.iter().map(|s| s.to_string()).collect(),
    }
}

fn ladder_high() -> Ladder {
    Ladder {
        steps: vec![
            step(0, &["grid_worker"]),
            step(60, &["grid_worker", "role:duty"]),
            step(180, &["grid_worker", "role:duty", "role:manager"]),
        ],
        repeat_s: Some(180),
    }
}

fn ladder_medium() -> Ladder {
    Ladder {
        steps: vec![
            step(0, &["grid_worker"]),
            step(1800, &["grid_worker", "role:duty"]),
        ],
        repeat_s: None,
    }
}

fn ladder_low() -> Ladder {
    Ladder {
        steps: vec![step(0, &["grid_worker"])],
        repeat_s: None,
    }
}

/// A webhook: every notification to `target` is also sent to `url` — the `StaffAlert` JSON as
/// it is (`preset = "json"`), or a message for a WeCom or DingTalk group robot — and retried until
/// it is accepted (2xx, and `errcode` 0 for the robots). See crate::alerting::channels.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookConfig {
    /// `role:NAME` or a staff id.
    pub target: String,
    /// `http://…` or `https://…`; for the robots, without the key (it comes from `key_file` or
    /// `key_env`), e.g. `https://qyapi.weixin.qq.com/cgi-bin/webhook/send`.
    pub url: String,
    /// The channel's name; pending deliveries refer to it across restarts. Required for the
    /// robot presets; a `json` webhook without one is referred to by its URL.
    #[serde(default)]
    pub name: Option<String>,
    /// `json` (default), `wecom` (企业微信群机器人) or `dingtalk` (钉钉自定义机器人).
    #[serde(default)]
    pub preset: WebhookPreset,
    /// `text` (default) or `markdown`, for the robot presets.
    #[serde(default)]
    pub format: WebhookFormat,
    /// File holding the robot's key (WeCom `key`, DingTalk `access_token`), relative to the
    /// config file. Never logged.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    #[serde(default)]
    pub key_env: Option<String>,
    /// File holding DingTalk's signing secret (`SEC…`, 加签), relative to the config file.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// PEM CA bundle to trust for this `https://` URL (a private CA), besides the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// What a pending delivery stores to find this channel again: its name, else its URL.
    pub fn channel_ref(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }
}

/// What a webhook sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookPreset {
    /// The `StaffAlert` JSON (protocol/MQTT.md), for an SMS/voice gateway or your own service.
    #[default]
    Json,
    /// A WeCom (企业微信) group robot: `msgtype` text or markdown, `key` in the URL.
    Wecom,
    /// A DingTalk (钉钉) custom robot: `access_token` in the URL, optional HMAC-SHA256 signature.
    Dingtalk,
}

/// The robots' message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Plain text.
    #[default]
    Text,
    /// Markdown (bold title, a link to the console).
    Markdown,
}

/// Device supervision settings.
#[derive(Debug, Clone, Deserialize)]
pub struct SupervisionConfig {
    /// A device is offline after this many heartbeat intervals without a message.
    #[serde(default = "default_missed")]
    pub missed_heartbeats: u32,
    /// After a gateway start or a broker reconnect, devices get this long to report in before
    /// any is declared offline (no flood of offline alerts).
    #[serde(default = "default_grace")]
    pub grace_s: u64,
    /// Battery percentage below which a low-battery alert is raised (once).
    #[serde(default = "default_low_battery")]
    pub low_battery_pct: u8,
}

fn default_missed() -> u32 {
    3
}
fn default_grace() -> u64 {
    600
}
fn default_low_battery() -> u8 {
    20
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            missed_heartbeats: default_missed(),
            grace_s: default_grace(),
            low_battery_pct: default_low_battery(),
        }
    }
}

/// Daily check-in (平安键) of residents living alone (status 独居).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckinConfig {
    /// Off switch.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Local time (`time_zone`) by which a resident must have shown activity today, `HH:MM`.
    #[serde(default = "default_deadline")]
    pub deadline: String,
}

fn yes() -> bool {
    true
}
fn default_deadline() -> String {
    "10:00".into()
}

impl Default for CheckinConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            deadline: default_deadline(),
        }
    }
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in {}:\n{}", .problems.len(), .file.display(), list(.problems))]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config whose references all resolve: devices and staff merged from CSV and inline entries.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file as written (plus overrides).
    pub config: Config,
    /// Devices by id.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Staff by id.
    pub staff: BTreeMap<String, StaffConfig>,
    /// Residents by id.
    pub residents: BTreeMap<String, Resident>,
    /// `residents_csv` resolved against the config file's directory.
    pub roster_path: Option<PathBuf>,
    /// The check-in deadline, parsed.
    pub checkin_deadline: jiff::civil::Time,
    /// The canteen's rules, when a canteen is configured.
    pub canteen_rules: Option<crate::canteen::rules::RuleSet>,
    /// The health kiosks' settings with their rules loaded.
    pub vitals: crate::vitals::Settings,
    /// The site secret card MACs are checked with (`canteen.card_mac_secret_file`).
    pub card_mac_secret: Option<crate::canteen::mac::SiteSecret>,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Reads, overrides, parses and validates `file`, using the process environment.
pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// [`load`] with an explicit environment (for tests).
pub fn load_with_env(
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let fail = |problems| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(vec![problem(
            file.display().to_string(),
            format!("cannot read the config file: {e}"),
        )])
    })?;
    let mut value: toml::Table = toml::from_str(&text)
        .map_err(|e| fail(vec![problem("(file)", format!("not valid TOML: {e}"))]))?;
    apply_env(&mut value, env);

    let mut unknown = Vec::new();
    let parsed: Result<Config, _> =
        serde_ignored::deserialize(toml::Value::Table(value), |p| unknown.push(p.to_string()));
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|p| {
            problem(
                p,
                "unknown key; remove it or check its spelling (see deploy/eldergate.example.toml)",
            )
        })
        .collect();
    let mut config = match parsed {
        Ok(c) => c,
        Err(e) => {
            problems.push(problem("(structure)", e.to_string()));
            return Err(fail(problems));
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    secrets::resolve(&mut config, base, &mut problems);
    let loaded = validate(config, base, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(fail(problems))
    }
}

/// Keys whose values stay strings even when they look like numbers.
const STRING_KEYS: &[&str] = &[
    "password",
    "password_file",
    "username",
    "url",
    "site_id",
    "gateway_id",
    "data_dir",
    "listen",
    "ca_file",
    "client_cert",
    "client_key",
    "mode",
    "tls_cert",
    "tls_key",
];

fn apply_env(root: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) {
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        set_path(root, parents, last, raw);
    }
}

/// Sets `parents.last = raw`, creating tables on the way and coercing `raw` to the type already
/// there (or, for a new key, to an integer or boolean when it looks like one).
fn set_path(table: &mut toml::Table, parents: &[String], last: &str, raw: String) {
    if let Some((first, rest)) = parents.split_first() {
        let entry = table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        if let toml::Value::Table(t) = entry {
            set_path(t, rest, last, raw);
        }
        return;
    }
    let value = match table.get(last) {
        Some(toml::Value::Integer(_)) => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or(toml::Value::String(raw)),
        Some(toml::Value::Boolean(_)) => raw
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .unwrap_or(toml::Value::String(raw)),
        Some(toml::Value::String(_)) => toml::Value::String(raw),
        _ if STRING_KEYS.contains(&last) => toml::Value::String(raw),
        _ => {
            if let Ok(i) = raw.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(b) = raw.parse::<bool>() {
                toml::Value::Boolean(b)
            } else {
                toml::Value::String(raw)
            }
        }
    };
    table.insert(last.to_string(), value);
}

mod secrets;
pub use secrets::redact_url;
mod validate;
use validate::validate;

#[cfg(test)]
mod tests;

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
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eldergate_protocol::topic::is_valid_id;

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
    /// Who is told about alerts.
    #[serde(default)]
    pub escalation: EscalationConfig,
}

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}

/// HTTP API settings.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Address to listen on; loopback only until the console has a login.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
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
    /// External broker password; prefer `ELDERGATE__BROKER__PASSWORD`.
    #[serde(default)]
    pub password: Option<String>,
    /// Allow connecting without credentials (test brokers only). Must be written explicitly.
    #[serde(default)]
    pub anonymous: bool,
    /// PEM CA bundle for `mqtts://`; the system roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u16,
}

fn default_keep_alive() -> u16 {
    15
}

/// Central store settings.
#[derive(Debug, Clone, Deserialize)]
pub struct CentralConfig {
    /// `sqlite:path` (embedded, relative to data_dir) or `postgres://…`.
    pub url: String,
    /// Events per forwarded batch.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Longest pause between retries, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_s: u64,
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
        }
    }
}

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// One-touch alarm button.
    AlarmButton,
    /// Canteen or handheld card reader.
    CardReader,
    /// Health kiosk.
    HealthKiosk,
}

/// How a device reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// MQTT.
    #[default]
    Mqtt,
    /// A serial port (receiver dongle, RS-485).
    Serial,
}

/// One registered device.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceConfig {
    /// Device id, as in its topics.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// How it connects.
    #[serde(default)]
    pub link: Link,
    /// The resident it belongs to (alarm buttons).
    #[serde(default)]
    pub resident_id: Option<String>,
    /// Where it is.
    #[serde(default)]
    pub location: Option<String>,
    /// Expected heartbeat interval.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: u32,
}

fn default_heartbeat() -> u32 {
    300
}

/// One staff member.
#[derive(Debug, Clone, Deserialize)]
pub struct StaffConfig {
    /// Staff id, e.g. `S009`.
    pub id: String,
    /// Name.
    pub name: String,
    /// `grid_worker`, `duty`, `manager`, `canteen_operator`, `admin`.
    pub role: String,
    /// Grid for grid workers.
    #[serde(default)]
    pub grid: Option<String>,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
}

/// Who is told about alerts. Entries are staff ids (`S009`) or roles (`role:duty`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EscalationConfig {
    /// Told about every alert when it is raised.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// One thing wrong with a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `broker.url` or `devices[3].id`, or `file.csv:12`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
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
    /// `escalation.notify` expanded to staff ids.
    pub notify: Vec<String>,
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
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            problems.push(problem("(structure)", e.to_string()));
            return Err(fail(problems));
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
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
    "username",
    "url",
    "site_id",
    "gateway_id",
    "data_dir",
    "listen",
    "ca_file",
    "mode",
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

fn validate(config: Config, base: &Path, problems: &mut Vec<Problem>) -> Loaded {
    for (key, v) in [
        ("site_id", &config.site_id),
        ("gateway_id", &config.gateway_id),
    ] {
        if !is_valid_id(v) {
            problems.push(problem(
                key,
                format!("{v:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
    }
    if jiff::tz::TimeZone::get(&config.time_zone).is_err() {
        problems.push(problem(
            "time_zone",
            format!("{:?} is not a known IANA time zone", config.time_zone),
        ));
    }
    if !config.http.listen.ip().is_loopback() {
        problems.push(problem(
            "http.listen",
            "the HTTP API has no login yet; listen on 127.0.0.1 only",
        ));
    }
    validate_broker(&config.broker, problems);
    validate_central(&config.central, problems);
    if config.journal.max_batch == 0 {
        problems.push(problem("journal.max_batch", "must be at least 1"));
    }

    let mut devices = BTreeMap::new();
    if let Some(csv_path) = &config.device_csv {
        for (line, d) in read_csv::<DeviceRow>(&base.join(csv_path), "device_csv", problems) {
            add_device(
                &mut devices,
                d.into(),
                format!("{}:{line}", file_name(csv_path)),
                problems,
            );
        }
    }
    for (i, d) in config.devices.iter().enumerate() {
        add_device(&mut devices, d.clone(), format!("devices[{i}]"), problems);
    }

    let mut staff = BTreeMap::new();
    let mut staff_rows: Vec<(String, StaffConfig)> = Vec::new();
    if let Some(csv_path) = &config.staff_csv {
        for (line, s) in read_csv::<StaffRow>(&base.join(csv_path), "staff_csv", problems) {
            staff_rows.push((format!("{}:{line}", file_name(csv_path)), s.into()));
        }
    }
    for (i, s) in config.staff.iter().enumerate() {
        staff_rows.push((format!("staff[{i}]"), s.clone()));
    }
    for (path, s) in staff_rows {
        if !is_valid_id(&s.id) {
            problems.push(problem(
                format!("{path}.id"),
                format!("{:?} is not a valid id", s.id),
            ));
        } else if staff.contains_key(&s.id) {
            problems.push(problem(
                format!("{path}.id"),
                format!("duplicate staff id {}", s.id),
            ));
        } else {
            staff.insert(s.id.clone(), s);
        }
    }

    let mut notify = Vec::new();
    let mut seen = HashSet::new();
    for (i, entry) in config.escalation.notify.iter().enumerate() {
        let path = format!("escalation.notify[{i}]");
        let ids: Vec<String> = match entry.strip_prefix("role:") {
            Some(role) => staff
                .values()
                .filter(|s| s.role == role)
                .map(|s| s.id.clone())
                .collect(),
            None if staff.contains_key(entry) => vec![entry.clone()],
            None => Vec::new(),
        };
        if ids.is_empty() {
            problems.push(problem(
                path,
                format!("{entry:?} names no staff member; use a staff id or role:NAME of someone under [[staff]] or in staff_csv"),
            ));
        }
        for id in ids {
            if seen.insert(id.clone()) {
                notify.push(id);
            }
        }
    }
    Loaded {
        config,
        devices,
        staff,
        notify,
    }
}

fn add_device(
    devices: &mut BTreeMap<String, DeviceConfig>,
    d: DeviceConfig,
    path: String,
    problems: &mut Vec<Problem>,
) {
    if !is_valid_id(&d.id) {
        problems.push(problem(
            format!("{path}.id"),
            format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _ .", d.id),
        ));
    } else if d.heartbeat_s == 0 {
        problems.push(problem(format!("{path}.heartbeat_s"), "must be at least 1"));
    } else if devices.contains_key(&d.id) {
        problems.push(problem(
            format!("{path}.id"),
            format!("duplicate device id {}", d.id),
        ));
    } else {
        devices.insert(d.id.clone(), d);
    }
}

fn validate_broker(b: &BrokerConfig, problems: &mut Vec<Problem>) {
    match b.mode {
        BrokerMode::Embedded => {
            if b.url.is_some() {
                problems.push(problem(
                    "broker.url",
                    "an embedded broker has no url; set broker.listen, or mode = \"external\"",
                ));
            }
        }
        BrokerMode::External => {
            match &b.url {
                None => problems.push(problem(
                    "broker.url",
                    "an external broker needs url = \"mqtt://host:1883\" (or mqtts://)",
                )),
                Some(u) => {
                    if let Err(e) = crate::mqtt::parse_broker_url(u) {
                        problems.push(problem("broker.url", e));
                    }
                }
            }
            if b.listen.is_some() {
                problems.push(problem(
                    "broker.listen",
                    "listen is for the embedded broker only",
                ));
            }
            match (&b.username, &b.password, b.anonymous) {
                (Some(_), Some(_), false) | (None, None, true) => {}
                (_, _, true) => problems.push(problem(
                    "broker.anonymous",
                    "anonymous = true conflicts with username/password; remove one",
                )),
                (None, _, false) => problems.push(problem(
                    "broker.username",
                    "an external broker needs per-gateway credentials: set broker.username and ELDERGATE__BROKER__PASSWORD (or anonymous = true for a test broker)",
                )),
                (Some(_), None, false) => problems.push(problem(
                    "broker.password",
                    "not set; export ELDERGATE__BROKER__PASSWORD (there is no default password)",
                )),
            }
        }
    }
}

fn validate_central(c: &CentralConfig, problems: &mut Vec<Problem>) {
    let ok = c.url.starts_with("sqlite:")
        || c.url.starts_with("postgres://")
        || c.url.starts_with("postgresql://");
    if !ok {
        problems.push(problem(
            "central.url",
            format!("{:?} must start with sqlite: or postgres://", c.url),
        ));
    }
    if c.batch_size == 0 {
        problems.push(problem("central.batch_size", "must be at least 1"));
    }
    if c.retry_max_s == 0 {
        problems.push(problem("central.retry_max_s", "must be at least 1"));
    }
}

#[derive(Deserialize)]
struct DeviceRow {
    device_id: String,
    kind: DeviceKind,
    #[serde(default)]
    link: Link,
    #[serde(default)]
    resident_id: Option<String>,
    #[serde(default)]
    location: Option<String>,
    heartbeat_s: u32,
}

impl From<DeviceRow> for DeviceConfig {
    fn from(r: DeviceRow) -> Self {
        DeviceConfig {
            id: r.device_id,
            kind: r.kind,
            link: r.link,
            resident_id: r.resident_id.filter(|s| !s.is_empty()),
            location: r.location.filter(|s| !s.is_empty()),
            heartbeat_s: r.heartbeat_s,
        }
    }
}

#[derive(Deserialize)]
struct StaffRow {
    staff_id: String,
    name: String,
    role: String,
    #[serde(default)]
    grid: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

impl From<StaffRow> for StaffConfig {
    fn from(r: StaffRow) -> Self {
        StaffConfig {
            id: r.staff_id,
            name: r.name,
            role: r.role,
            grid: r.grid.filter(|s| !s.is_empty()),
            phone: r.phone.filter(|s| !s.is_empty()),
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Reads every row of a CSV file; bad rows become problems (`file:line`), good rows are returned
/// with their line numbers.
fn read_csv<T: serde::de::DeserializeOwned>(
    path: &Path,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(u64, T)> {
    let name = file_name(path);
    let mut reader = match csv::Reader::from_path(path) {
        Ok(r) => r,
        Err(e) => {
            problems.push(problem(key, format!("cannot read {}: {e}", path.display())));
            return Vec::new();
        }
    };
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(problem(key, format!("{name}: no header row: {e}")));
            return Vec::new();
        }
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let parsed = record.and_then(|r| {
            let line = r.position().map(|p| p.line()).unwrap_or(0);
            r.deserialize::<T>(Some(&headers)).map(|row| (line, row))
        });
        match parsed {
            Ok(row) => rows.push(row),
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push(problem(format!("{name}:{line}"), e.to_string()));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests;

//! Semantic checks of a parsed config: every reference resolves, every value is usable. Each
//! problem is collected (with its key path) rather than returned at the first.

use super::*;

pub(super) fn validate(mut config: Config, base: &Path, problems: &mut Vec<Problem>) -> Loaded {
    super::links::resolve_paths(&mut config, base);
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
    validate_listen(&config.http, problems);
    if config.http.session_idle_s == 0 || config.http.session_max_s < config.http.session_idle_s {
        problems.push(problem(
            "http.session_max_s",
            "session_idle_s must be at least 1 and session_max_s at least session_idle_s",
        ));
    }
    validate_http(&config.http, problems);
    validate_broker(&config.broker, problems);
    validate_central(&config.central, problems);
    super::links::validate(&config, problems);
    if config.journal.max_batch == 0 {
        problems.push(problem("journal.max_batch", "must be at least 1"));
    }
    validate_retention(&config, problems);

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

    let roster_path = config.residents_csv.as_ref().map(|p| base.join(p));
    let mut residents = BTreeMap::new();
    if let Some(path) = &roster_path {
        let (read, bad) = crate::roster::read(path);
        problems.extend(bad);
        residents = read;
        problems.extend(crate::roster::check_references(
            &residents, &devices, &staff,
        ));
    }

    for (name, ladder) in [
        ("high", &config.escalation.high),
        ("medium", &config.escalation.medium),
        ("low", &config.escalation.low),
    ] {
        if ladder.steps.is_empty() {
            problems.push(problem(
                format!("escalation.{name}.steps"),
                "needs at least one step",
            ));
        }
        let mut last = None;
        for (i, st) in ladder.steps.iter().enumerate() {
            let path = format!("escalation.{name}.steps[{i}]");
            if last.is_some_and(|l| st.after_s <= l) {
                problems.push(problem(
                    format!("{path}.after_s"),
                    "steps must have increasing after_s",
                ));
            }
            last = Some(st.after_s);
            if st.notify.is_empty() {
                problems.push(problem(format!("{path}.notify"), "names nobody"));
            }
            for (j, entry) in st.notify.iter().enumerate() {
                check_target(entry, &staff, true, format!("{path}.notify[{j}]"), problems);
            }
        }
        if ladder.repeat_s == Some(0) {
            problems.push(problem(
                format!("escalation.{name}.repeat_s"),
                "must be at least 1 (or left out)",
            ));
        }
    }
    for (i, w) in config.webhooks.iter().enumerate() {
        check_target(
            &w.target,
            &staff,
            false,
            format!("webhooks[{i}].target"),
            problems,
        );
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            problems.push(problem(
                format!("webhooks[{i}].url"),
                format!("{:?} must be an http:// or https:// URL", w.url),
            ));
        }
    }
    if config.supervision.missed_heartbeats == 0 {
        problems.push(problem(
            "supervision.missed_heartbeats",
            "must be at least 1",
        ));
    }
    if config.supervision.low_battery_pct > 100 {
        problems.push(problem(
            "supervision.low_battery_pct",
            "is a percentage (0-100)",
        ));
    }
    let mut ports = std::collections::HashSet::new();
    for (i, p) in config.serial.iter().enumerate() {
        if !SERIAL_BAUDS.contains(&p.baud) {
            let allowed: Vec<String> = SERIAL_BAUDS.iter().map(u32::to_string).collect();
            problems.push(problem(
                format!("serial[{i}].baud"),
                format!(
                    "{} is not a standard baud rate; use one of {} (the devices on the port must use the same)",
                    p.baud,
                    allowed.join(", ")
                ),
            ));
        }
        if p.port.trim().is_empty() {
            problems.push(problem(
                format!("serial[{i}].port"),
                "is empty; give the device path, e.g. /dev/serial/by-id/usb-…",
            ));
        }
        if !ports.insert(p.port.clone()) {
            problems.push(problem(
                format!("serial[{i}].port"),
                format!("{} is listed twice", p.port),
            ));
        }
    }
    let checkin_deadline = match config.checkin.deadline.parse::<jiff::civil::Time>() {
        Ok(t) => t,
        Err(_) => {
            problems.push(problem(
                "checkin.deadline",
                format!(
                    "{:?} is not a local time like \"10:00\"",
                    config.checkin.deadline
                ),
            ));
            jiff::civil::Time::midnight()
        }
    };
    let canteen_rules = config.canteen.as_ref().and_then(|c| {
        match crate::canteen::rules::RuleSet::load(&base.join(&c.rules)) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(problem("canteen.rules", e.to_string()));
                None
            }
        }
    });
    let vitals = crate::vitals::Settings {
        rules: match config.vitals.rules.as_ref() {
            None => crate::vitals::VitalRules::default(),
            Some(path) => match crate::vitals::VitalRules::load(&base.join(path)) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(problem("vitals.rules", e.to_string()));
                    crate::vitals::VitalRules::default()
                }
            },
        },
        session_s: config.vitals.session_s,
        bp_window_s: config.vitals.bp_window_s,
    };
    for (key, v) in [
        ("vitals.session_s", config.vitals.session_s),
        ("vitals.bp_window_s", config.vitals.bp_window_s),
    ] {
        if !(10..=3600).contains(&v) {
            problems.push(problem(key, format!("{v} is not 10–3600 seconds")));
        }
    }
    let card_mac_secret = config
        .canteen
        .as_ref()
        .and_then(|c| c.card_mac_secret_file.as_ref())
        .and_then(
            |f| match crate::canteen::mac::SiteSecret::load(&base.join(f)) {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push(problem("canteen.card_mac_secret_file", e.to_string()));
                    None
                }
            },
        );
    Loaded {
        config,
        devices,
        staff,
        residents,
        roster_path,
        checkin_deadline,
        canteen_rules,
        vitals,
        card_mac_secret,
    }
}

/// `grid_worker` (ladders only), `role:NAME` with at least one member, or a staff id.
fn check_target(
    entry: &str,
    staff: &BTreeMap<String, StaffConfig>,
    allow_grid_worker: bool,
    path: String,
    problems: &mut Vec<Problem>,
) {
    let ok = match entry.strip_prefix("role:") {
        Some(role) => staff.values().any(|s| s.role == role),
        None if entry == "grid_worker" => allow_grid_worker,
        None => staff.contains_key(entry),
    };
    if !ok {
        problems.push(problem(
            path,
            format!("{entry:?} names no staff member; use grid_worker, role:NAME or a staff id from [[staff]] / staff_csv"),
        ));
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

/// Beyond loopback only with TLS, or behind a declared reverse proxy whose addresses are named;
/// the certificate and key must load.
fn validate_listen(h: &HttpConfig, problems: &mut Vec<Problem>) {
    match (&h.tls_cert, &h.tls_key) {
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::tls::server_config(cert, key) {
                problems.push(problem(e.key, e.to_string()));
            }
        }
        (Some(_), None) => problems.push(problem(
            "http.tls_key",
            "tls_cert is set but tls_key is not: HTTPS needs both the certificate chain and its private key",
        )),
        (None, Some(_)) => problems.push(problem(
            "http.tls_cert",
            "tls_key is set but tls_cert is not: HTTPS needs both the certificate chain and its private key",
        )),
        (None, None) => {}
    }
    if !h.trusted_proxies.is_empty() && !h.behind_proxy {
        problems.push(problem(
            "http.trusted_proxies",
            "trusted_proxies is read only with behind_proxy = true; set it, or remove trusted_proxies",
        ));
    }
    let ip = h.listen.ip();
    if ip.is_loopback() || h.tls_cert.is_some() || h.tls_key.is_some() {
        return;
    }
    if !h.behind_proxy {
        problems.push(problem(
            "http.listen",
            format!("{ip} is reachable beyond this machine, and logins and session cookies would cross the network unencrypted: set http.tls_cert and http.tls_key (the gateway serves HTTPS), or listen on 127.0.0.1 behind a reverse proxy with TLS, or declare such a proxy with http.behind_proxy = true and its addresses in http.trusted_proxies"),
        ));
    } else if h.trusted_proxies.is_empty() {
        problems.push(problem(
            "http.trusted_proxies",
            format!("http.listen {ip} is beyond loopback behind a reverse proxy: name the proxy's addresses in http.trusted_proxies, so that only its X-Forwarded-For is believed (anyone else could forge one and escape the login throttle)"),
        ));
    }
}

/// Connections kept for `/healthz`, `/metrics` and staff actions when every live stream is open.
const HTTP_RESERVED_CONNECTIONS: usize = 8;

fn validate_http(h: &HttpConfig, problems: &mut Vec<Problem>) {
    for (key, v) in [
        ("http.header_read_timeout_s", h.header_read_timeout_s),
        ("http.idle_timeout_s", h.idle_timeout_s),
        ("http.shutdown_grace_s", h.shutdown_grace_s),
    ] {
        if v == 0 {
            problems.push(problem(key, "must be at least 1 (seconds)"));
        }
    }
    if h.max_sse_clients == 0 {
        problems.push(problem(
            "http.max_sse_clients",
            "must be at least 1, or the console gets no live alerts",
        ));
    }
    if h.max_connections < h.max_sse_clients.saturating_add(HTTP_RESERVED_CONNECTIONS) {
        problems.push(problem(
            "http.max_connections",
            format!(
                "must be at least http.max_sse_clients + {HTTP_RESERVED_CONNECTIONS} (= {}), so that /healthz, /metrics and staff actions still get a connection when every live stream is open",
                h.max_sse_clients.saturating_add(HTTP_RESERVED_CONNECTIONS)
            ),
        ));
    }
    if h.roster_max_bytes < 1024 {
        problems.push(problem(
            "http.roster_max_bytes",
            "must be at least 1024 (bytes); a roster of a few thousand residents needs about 1 MiB",
        ));
    }
}

fn validate_broker(b: &BrokerConfig, problems: &mut Vec<Problem>) {
    if !(1..=1000).contains(&b.write_batch) {
        problems.push(problem(
            "broker.write_batch",
            format!(
                "{} is out of range: 1 (a flush per packet) to 1000 packets per flush",
                b.write_batch
            ),
        ));
    }
    match b.mode {
        BrokerMode::Embedded => {
            if !cfg!(feature = "embedded-broker") {
                problems.push(problem("broker.mode", NO_EMBEDDED_BROKER));
            }
            if b.url.is_some() {
                problems.push(problem(
                    "broker.url",
                    "an embedded broker has no url; set broker.listen, or mode = \"external\"",
                ));
            }
            // The embedded broker has no authentication and no ACLs: anyone who reaches it can
            // raise or silence alarms. Loopback only.
            if let Some(l) = b.listen.filter(|l| !l.ip().is_loopback()) {
                problems.push(problem(
                    "broker.listen",
                    format!("the embedded broker has no authentication, so it may listen on loopback only (127.0.0.1 or ::1), not {l}; for devices on the network use Mosquitto with the files of `eldergate provision` (mode = \"external\")"),
                ));
            }
        }
        BrokerMode::External => {
            match &b.url {
                None => problems.push(problem(
                    "broker.url",
                    "an external broker needs url = \"mqtt://host:1883\" (or mqtts://)",
                )),
                Some(u) => match super::parse_broker_url(u) {
                    Err(e) => problems.push(problem("broker.url", e)),
                    Ok(addr) => validate_broker_tls(b, addr.tls, problems),
                },
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

/// TLS settings: no plaintext fallback, a client certificate comes with its key, and the files
/// are readable PEM now rather than at the first connect.
fn validate_broker_tls(b: &BrokerConfig, tls: bool, problems: &mut Vec<Problem>) {
    let files = [
        ("broker.ca_file", &b.ca_file),
        ("broker.client_cert", &b.client_cert),
        ("broker.client_key", &b.client_key),
    ];
    if !tls {
        for (key, file) in files {
            if file.is_some() {
                problems.push(problem(
                    key,
                    "is set but broker.url is mqtt:// (plaintext); use mqtts:// — the gateway never falls back to plaintext when TLS is configured",
                ));
            }
        }
        return;
    }
    if b.client_cert.is_some() != b.client_key.is_some() {
        problems.push(problem(
            "broker.client_cert",
            "a client certificate needs its key: set both broker.client_cert and broker.client_key, or neither",
        ));
    }
    if b.client_cert.is_some() && b.ca_file.is_none() {
        problems.push(problem(
            "broker.ca_file",
            "a client certificate is configured, so name the broker's CA too (broker.ca_file)",
        ));
    }
    for (key, file) in files {
        let Some(path) = file else { continue };
        match std::fs::read_to_string(path) {
            Err(e) => problems.push(problem(key, format!("cannot read {}: {e}", path.display()))),
            Ok(text) if !text.contains("-----BEGIN ") => problems.push(problem(
                key,
                format!("{} is not PEM (no -----BEGIN line)", path.display()),
            )),
            Ok(_) => {}
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
            format!(
                "{} must start with sqlite: or postgres://",
                super::redact_url(&c.url)
            ),
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

/// Every retention age is 0 (forever, where allowed) or at least the floor: two days, or the
/// dedupe window if longer (src/retention.rs).
fn validate_retention(config: &Config, problems: &mut Vec<Problem>) {
    let r = &config.retention;
    let floor = crate::retention::floor_days(config.journal.dedupe_window_s);
    let ages = [
        ("retention.routine_days", r.routine_days, false),
        ("retention.records_days", r.records_days, true),
        ("retention.dead_letter_days", r.dead_letter_days, true),
        ("retention.webhook_days", r.webhook_days, true),
    ];
    for (key, days, forever_ok) in ages {
        if days == 0 && forever_ok {
            continue;
        }
        if days < floor {
            problems.push(problem(
                key,
                format!(
                    "must be at least {floor} days (two days, or journal.dedupe_window_s if longer){}",
                    if forever_ok { ", or 0 to keep forever" } else { "" }
                ),
            ));
        }
    }
    if r.interval_s == 0 {
        problems.push(problem("retention.interval_s", "must be at least 1"));
    }
}

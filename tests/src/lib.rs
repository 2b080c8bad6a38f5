//! Harness for the end-to-end tests and the benchmarks: real Mosquitto, real PostgreSQL, the real
//! `eldergate` binary. Each test gets its own broker process on a free port, its own database and
//! its own data directory; nothing here mocks those parts.
//!
//! The `eldergate` binary must be built first (`tests/run` does: `cargo build --bins`).

use anyhow::{bail, Context};
use sqlx::postgres::PgPool;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod private_pg;
pub mod proxy;
pub mod raw_mqtt;
pub mod test_ca;

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Directory of the built binaries (`target/debug` when the tests run from `target/debug/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{name} is not installed; run tests/run, which installs it (apt-get install {name})")
}

/// A Mosquitto broker of our own, on a free port, killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The limits a test broker runs with.
#[derive(Debug, Clone, Copy)]
pub struct BrokerLimits {
    /// `max_packet_size` (None: Mosquitto's default, no limit).
    pub max_packet_size: Option<usize>,
    /// `max_inflight_messages` (0: unlimited).
    pub max_inflight_messages: u32,
    /// `max_queued_messages` (0: unlimited).
    pub max_queued_messages: u32,
}

impl BrokerLimits {
    /// What deploy/mosquitto/eldergate.conf sets, except that the queue for a disconnected
    /// session is unlimited (tests queue large backlogs on purpose).
    pub const DEPLOY: BrokerLimits = BrokerLimits {
        max_packet_size: Some(eldergate::mqtt::BROKER_MAX_PACKET),
        max_inflight_messages: 1000,
        max_queued_messages: 0,
    };
}

impl Mosquitto {
    /// Starts mosquitto with anonymous access on loopback, the deployed limits
    /// ([`BrokerLimits::DEPLOY`]) and room for large bursts.
    pub fn start() -> anyhow::Result<Mosquitto> {
        Self::start_with("allow_anonymous true\n")
    }

    /// Starts mosquitto with the deployed limits and `extra` appended to the config.
    pub fn start_with(extra: &str) -> anyhow::Result<Mosquitto> {
        Self::start_limited(BrokerLimits::DEPLOY, extra)
    }

    /// Starts mosquitto with `limits` and `extra` appended to the config.
    pub fn start_limited(limits: BrokerLimits, extra: &str) -> anyhow::Result<Mosquitto> {
        let bin = find_program("mosquitto")?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf)?;
        let packet = limits
            .max_packet_size
            .map(|n| format!("max_packet_size {n}\n"))
            .unwrap_or_default();
        write!(
            f,
            "listener {port} 127.0.0.1\npersistence false\n{packet}max_queued_messages {}\nmax_inflight_messages {}\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n{extra}",
            limits.max_queued_messages, limits.max_inflight_messages,
        )?;
        drop(f);
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start mosquitto")?;
        wait_for_port(port)?;
        Ok(Mosquitto {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Mosquitto {
    /// The broker's process id (e.g. to read its CPU and memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port with the same config.
    /// Without persistence it comes back empty: every session, subscription and queued message
    /// is gone, as after a crash of a broker without a disk.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new(find_program("mosquitto")?)
            .arg("-c")
            .arg(self._dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot restart mosquitto")?;
        wait_for_port(self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 10 s for something to listen on `port`.
pub fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after 10 s")
}

/// URL of the PostgreSQL server used to create test databases.
pub fn pg_admin_url() -> String {
    std::env::var("ELDERGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `host:port` of the test PostgreSQL server.
pub fn pg_host_port() -> String {
    let url = pg_admin_url();
    let after = url.split_once('@').map(|(_, r)| r).unwrap_or(&url);
    after
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_string()
}

/// A PostgreSQL database of our own.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// URL to connect to it.
    pub url: String,
}

impl TestDb {
    /// Creates a fresh database `eg_test_<unix seconds>_<random>`: the time lets `tests/run` clean
    /// up only what an interrupted run left hours ago, never a concurrent run's databases.
    pub async fn create() -> anyhow::Result<TestDb> {
        let admin = pg_admin_url();
        let pool = PgPool::connect(&admin).await.with_context(|| {
            format!(
                "cannot reach PostgreSQL at {admin}; tests/run starts it, or set ELDERGATE_TEST_PG"
            )
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = format!("eg_test_{now}_{}", rand::random::<u32>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin);
        Ok(TestDb {
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Its URL with the server address replaced (e.g. by a proxy's).
    pub fn url_via(&self, host_port: &str) -> String {
        let (scheme_user, rest) = self
            .url
            .split_once('@')
            .unwrap_or(("postgres://postgres", &self.url));
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or(&self.name);
        format!("{scheme_user}@{host_port}/{path}")
    }

    /// Connects to it.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPool::connect(&self.url).await?)
    }

    /// Drops the database (best effort).
    pub async fn drop_db(self) {
        if let Ok(pool) = PgPool::connect(&pg_admin_url()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&pool)
            .await;
        }
    }
}

/// How to set up a test gateway.
#[derive(Clone)]
pub struct GatewaySpec {
    /// Broker port (external Mosquitto).
    pub broker_port: u16,
    /// Central store URL.
    pub central_url: String,
    /// Alarm buttons to register: `btn-0001` … `btn-{n}`.
    pub buttons: usize,
    /// Extra TOML appended to the config.
    pub extra: String,
    /// Heartbeat interval of the buttons, seconds.
    pub heartbeat_s: u32,
    /// Write a roster: button i belongs to resident R{i:05} in grid G01, living alone (独居).
    pub residents: bool,
    /// Register the buttons and the reader on the serial link instead of MQTT (the gateway
    /// takes a device only over the link it is registered on).
    pub serial: bool,
    /// More devices.csv rows (`device_id,kind,link,resident_id,location,heartbeat_s`, each
    /// ending in a newline), e.g. health kiosks.
    pub extra_devices: String,
}

impl GatewaySpec {
    /// A spec with `buttons` buttons, 300 s heartbeats, no roster, nothing extra.
    pub fn new(broker_port: u16, central_url: String, buttons: usize) -> GatewaySpec {
        GatewaySpec {
            broker_port,
            central_url,
            buttons,
            extra: String::new(),
            heartbeat_s: 300,
            residents: false,
            serial: false,
            extra_devices: String::new(),
        }
    }
}

/// The site id every test gateway uses.
pub const SITE: &str = "test-site";

/// Staff of every test gateway: S001 (grid worker of G01), S009 and S010 (duty), S012 (manager),
/// S013 (canteen operator: top-ups, voids, payouts, binding cards), S014 (admin: the test's API
/// token acts as S014), S015 (admin).
const STAFF: &str = r#"
[[staff]]
id = "S001"
name = "Grid Worker"
role = "grid_worker"
grid = "G01"
[[staff]]
id = "S009"
name = "Duty One"
role = "duty"
[[staff]]
id = "S010"
name = "Duty Two"
role = "duty"
[[staff]]
id = "S012"
name = "Manager"
role = "manager"
[[staff]]
id = "S013"
name = "Canteen Operator"
role = "canteen_operator"
[[staff]]
id = "S014"
name = "Test Admin"
role = "admin"
[[staff]]
id = "S015"
name = "Admin"
role = "admin"
"#;

/// Scopes of the token every test gateway's [`Gateway::api`] client carries: everything, and
/// `act_as`, so that tests may name the staff member acting (`"by"`), as MQTT staff commands do.
pub const TEST_TOKEN_SCOPES: &str = "read,alerts,canteen,roster,vitals,act_as";

/// A running `eldergate run` process with its own data dir and HTTP port.
pub struct Gateway {
    child: Option<Child>,
    /// Config file.
    pub config: PathBuf,
    /// Data dir (journal.db).
    pub data_dir: PathBuf,
    /// HTTP port.
    pub http_port: u16,
    /// API token (staff S014, [`TEST_TOKEN_SCOPES`]) created with `eldergate token create`.
    pub token: String,
    /// The binary [`Gateway::spawn`] runs: `eldergate` beside the tests unless set (e.g. the
    /// build before a change, measured beside this one by `tests/scale ingest --compare`).
    pub program: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// Creates an API token with the gateway's CLI (before or while it runs).
pub fn create_token(
    config: &Path,
    staff: &str,
    name: &str,
    scopes: &str,
) -> anyhow::Result<String> {
    let bin = bin_dir().join("eldergate");
    let out = Command::new(&bin)
        .args(["token", "--config"])
        .arg(config)
        .args([
            "create", "--staff", staff, "--name", name, "--scopes", scopes,
        ])
        .env("RUST_LOG", "error")
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "eldergate token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("egt_"))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("eldergate token create printed no token: {stdout}"))
}

/// Button ids `btn-0001` …
pub fn button(i: usize) -> String {
    format!("btn-{i:04}")
}

impl Gateway {
    /// Writes the config and starts the gateway; returns when `/healthz` answers.
    pub async fn start(spec: &GatewaySpec) -> anyhow::Result<Gateway> {
        Self::start_with_data_dir(spec, None).await
    }

    /// [`Gateway::start`] with the journal in `data_dir` (e.g. on a small tmpfs) instead of the
    /// test's own temporary directory; the config and the log stay there.
    pub async fn start_with_data_dir(
        spec: &GatewaySpec,
        data_dir: Option<&Path>,
    ) -> anyhow::Result<Gateway> {
        let broker = format!(
            "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\nanonymous = true",
            spec.broker_port
        );
        Self::start_with_broker(spec, data_dir, &broker).await
    }

    /// [`Gateway::start_with_data_dir`] with `broker` as the body of the `[broker]` section
    /// (e.g. mqtts with credentials and certificates) instead of anonymous plaintext.
    pub async fn start_with_broker(
        spec: &GatewaySpec,
        data_dir: Option<&Path>,
        broker: &str,
    ) -> anyhow::Result<Gateway> {
        let mut gw = Self::prepare_with_broker(spec, data_dir, broker)?;
        gw.spawn().await?;
        Ok(gw)
    }

    /// Writes the config (and the device, roster files) without starting the process: a test
    /// may edit `config` before [`Gateway::spawn`].
    pub fn prepare(spec: &GatewaySpec, data_dir: Option<&Path>) -> anyhow::Result<Gateway> {
        let broker = format!(
            "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\nanonymous = true",
            spec.broker_port
        );
        Self::prepare_with_broker(spec, data_dir, &broker)
    }

    /// [`Gateway::prepare`] with `broker` as the body of the `[broker]` section.
    pub fn prepare_with_broker(
        spec: &GatewaySpec,
        data_dir: Option<&Path>,
        broker: &str,
    ) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let data_dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("data"));
        let http_port = free_port();
        let mut devices = String::from("device_id,kind,link,resident_id,location,heartbeat_s\n");
        let link = if spec.serial { "serial" } else { "mqtt" };
        for i in 1..=spec.buttons {
            devices.push_str(&format!(
                "{},alarm_button,{link},R{i:05},楼{i},{}\n",
                button(i),
                spec.heartbeat_s
            ));
        }
        // The reader is not simulated: give it a heartbeat long enough never to go offline here.
        devices.push_str(&format!("rdr-01,card_reader,{link},,canteen,86400\n"));
        devices.push_str(&spec.extra_devices);
        std::fs::write(dir.path().join("devices.csv"), devices)?;
        let mut residents_line = String::new();
        if spec.residents {
            let mut roster = String::from("resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n");
            for i in 1..=spec.buttons {
                // Card ids CA000001, CA000002, … (hex, as readers report UIDs).
                roster.push_str(&format!(
                    "R{i:05},张三{i},女,1940-01-01,独居,1号楼,1单元,{i},G01,,{:08X},\n",
                    0xCA00_0000u32 + i as u32
                ));
            }
            std::fs::write(dir.path().join("residents.csv"), roster)?;
            residents_line = "residents_csv = \"residents.csv\"".into();
        }
        // The daily check-in runs at its deadline, so counting alerts would depend on the time of
        // day the test runs: it is off unless a test configures it.
        let mut extra = spec.extra.clone();
        if !extra.contains("[checkin]") {
            extra.push_str("\n[checkin]\nenabled = false\n");
        }
        let config = dir.path().join("eldergate.toml");
        std::fs::write(
            &config,
            format!(
                r#"site_id = "{SITE}"
gateway_id = "gw-test"
data_dir = "{data}"
device_csv = "devices.csv"
{residents_line}
[http]
listen = "127.0.0.1:{http_port}"
[broker]
{broker}
[central]
url = "{central}"
batch_size = 5000
retry_max_s = 1
{STAFF}
{extra}
"#,
                data = data_dir.display(),
                central = spec.central_url,
                extra = extra,
            ),
        )?;
        let token = create_token(&config, "S014", "e2e", TEST_TOKEN_SCOPES)?;
        Ok(Gateway {
            child: None,
            config,
            data_dir,
            http_port,
            token,
            program: None,
            _dir: dir,
        })
    }

    /// Starts (again) the process.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = self
            .program
            .clone()
            .unwrap_or_else(|| bin_dir().join("eldergate"));
        if !bin.exists() {
            bail!(
                "{} is missing: build it first with `cargo build --bins` (tests/run does)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,rumqttc=warn,sqlx=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let url = self.url("/healthz");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                    bail!("gateway exited with {status} during start:\n{log}");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("gateway did not answer /healthz within 30 s")
    }

    /// The HTTP client of the tests: every request carries the test's API token.
    pub fn api(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(v) = format!("Bearer {}", self.token).parse() {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap_or_default()
    }

    /// A new API token acting as `staff` with `scopes` (`eldergate token create`).
    pub fn token_for(&self, staff: &str, scopes: &str) -> anyhow::Result<String> {
        create_token(
            &self.config,
            staff,
            &format!("{staff}-{}", free_port()),
            scopes,
        )
    }

    /// Sets `staff`'s console password (`eldergate user set-password`, on stdin).
    pub fn set_password(&self, staff: &str, password: &str) -> anyhow::Result<()> {
        let mut child = Command::new(bin_dir().join("eldergate"))
            .args(["user", "--config"])
            .arg(&self.config)
            .args(["set-password", staff])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{password}")?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "set-password failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Path of the gateway's log file.
    pub fn log_path(&self) -> PathBuf {
        self._dir.path().join("gateway.log")
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// The process id, while it runs (e.g. to pause it with SIGSTOP, as a busy machine would).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a `kill` signal name: STOP, CONT, …) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("not running")
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn sigterm(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("not running")
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        for _ in 0..300 {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        bail!("gateway did not exit within 30 s of SIGTERM")
    }

    /// A read-only connection to the journal.
    pub async fn journal(&self) -> anyhow::Result<sqlx::SqlitePool> {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.data_dir.join("journal.db"))
            .read_only(true);
        Ok(sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?)
    }

    /// The value of a Prometheus metric line starting with `prefix` (summed over matches).
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.log_path()) {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- gateway log (last 40 lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        self.kill9();
    }
}

/// Fleet options for a test broker.
pub fn fleet_options(port: u16, client_id: &str) -> eldergate_sim::FleetOptions {
    eldergate_sim::FleetOptions {
        host: "127.0.0.1".into(),
        port,
        site: SITE.into(),
        client_id: client_id.into(),
        retransmit_after: Duration::from_secs(1),
        retransmit_max: Duration::from_secs(1),
        credentials: None,
    }
}

/// Polls `f` every 100 ms until it returns Some, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain MQTT client (event loop driven in the background), for publishing raw payloads.
pub async fn raw_client(port: u16, id: &str) -> rumqttc::AsyncClient {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = eldergate::mqtt::new_client(o, 1000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

/// Connects an MQTT client (optionally with credentials) and, if `filter` is given, subscribes.
/// Returns the client, the topics and payloads it receives, and whether the broker accepted the
/// connection (and subscription) within 10 s.
pub async fn connect_as(
    port: u16,
    credentials: Option<(&str, &str)>,
    id: &str,
    filter: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    bool,
) {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    connect_with(o, credentials, filter).await
}

/// [`connect_as`] with options made by the caller (e.g. a TLS transport).
pub async fn connect_with(
    mut o: rumqttc::MqttOptions,
    credentials: Option<(&str, &str)>,
    filter: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    bool,
) {
    use rumqttc::{Event, Incoming, QoS};
    if let Some((u, p)) = credentials {
        o.set_credentials(u, p);
    }
    let (client, mut el) = eldergate::mqtt::new_client(o, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ok_tx, ok_rx) = tokio::sync::oneshot::channel();
    let mut ok_tx = Some(ok_tx);
    let c = client.clone();
    let filter = filter.map(str::to_string);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => match &filter {
                    Some(f) => {
                        let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                    None => {
                        if let Some(t) = ok_tx.take() {
                            let _ = t.send(true);
                        }
                    }
                },
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(t) = ok_tx.take() {
                        let _ = t.send(true);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(t) = ok_tx.take() {
                        let _ = t.send(false);
                    }
                    return;
                }
            }
        }
    });
    let ok = tokio::time::timeout(Duration::from_secs(10), ok_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    (client, rx, ok)
}

/// A pty pair whose slave is reachable through `link` (a stable symlink, like
/// /dev/serial/by-id/…); returns the master, the device side. Plug it in after the gateway
/// started: a child process inherits open descriptors, and a gateway holding the master would
/// never see it go away.
pub fn plug_pty(link: &Path) -> anyhow::Result<PluggedPty> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().context("cannot make a pty pair")?;
    let name = slave.name().context("the pty slave has no path")?;
    drop(slave);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link)?;
    Ok(PluggedPty {
        master,
        link: link.to_path_buf(),
    })
}

/// The device side of a pty that [`plug_pty`] linked. Dropping it unplugs: the link goes first,
/// then the pty. In that order because a gateway still retrying a link that points at a freed
/// `/dev/pts/N` would open the pty that number is given to next — another test's, running
/// beside this one, whose gateway then cannot open it ("Unable to acquire exclusive lock").
pub struct PluggedPty {
    master: tokio_serial::SerialStream,
    link: PathBuf,
}

impl Drop for PluggedPty {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

impl std::ops::Deref for PluggedPty {
    type Target = tokio_serial::SerialStream;
    fn deref(&self) -> &Self::Target {
        &self.master
    }
}

impl std::ops::DerefMut for PluggedPty {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.master
    }
}

impl tokio::io::AsyncRead for PluggedPty {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().master).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PluggedPty {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().master).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().master).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().master).poll_shutdown(cx)
    }
}

/// Canteen rules for tests: one all-day period at ¥15.00, 10% off for 60+ (the test roster's
/// residents are born in 1940). Written into `dir`; returns the path.
pub fn all_day_canteen_rules(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("rules.toml");
    std::fs::write(
        &path,
        "name = \"test canteen\"\n[[periods]]\nname = \"all_day\"\nstart = \"00:00\"\nend = \"23:59:59\"\nprice_fen = 1500\n[[subsidies]]\nname = \"60+ 10%\"\nmin_age = 60\namount = { percent = 10 }\n",
    )?;
    Ok(path)
}

/// The firmware simulator's MQTT link to a test broker (site [`SITE`]).
pub async fn firmware_mqtt_link(
    port: u16,
    client_id: &str,
) -> anyhow::Result<eldergate_sim::SimLink> {
    let (link, _stats) = eldergate_sim::mqtt_link::connect(eldergate_sim::MqttLinkOptions {
        host: "127.0.0.1".into(),
        port,
        site: SITE.into(),
        client_id: client_id.into(),
        credentials: None,
    })
    .await?;
    Ok(link)
}

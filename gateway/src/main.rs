//! The `eldergate` command: run the gateway, check a config, import a roster, print canteen
//! reports. The demo and the device simulator are the `eldergate-sim` binary (crate sim/).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// With the embedded broker, every device's connection lives in this process's heap: jemalloc
/// holds 10,000 of them in ~10 MiB less than glibc malloc, whose freed holes between long-lived
/// connection state stay resident (docs/adr/0025-jemalloc-for-the-embedded-broker.md). Builds
/// without the broker (production, with Mosquitto) keep glibc malloc. SQLite, a C library,
/// still allocates with glibc malloc (capped at two arenas: `broker::limit_malloc_arenas`).
#[cfg(all(feature = "embedded-broker", target_os = "linux"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (its `malloc_conf`; the `_rjem_` prefix is
/// tikv-jemalloc-sys's on Linux; a test below checks they are in effect): one arena (each arena
/// keeps its own partly used pages) and no per-thread caches (with a dozen threads they held
/// ~1.5 MiB more at idle). Freed pages are kept for jemalloc's default 10 s before they are
/// given back: giving them back at once (`dirty_decay_ms:0`) saved ~0.5 MiB more at 10,000
/// devices but cost ~200 `madvise` calls and page faults a second (ADR 0025).
#[cfg(all(feature = "embedded-broker", target_os = "linux"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 23] = b"narenas:1,tcache:false\0";

#[derive(Parser)]
#[command(name = "eldergate", version, about = "Community elderly-care gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run {
        /// The TOML config (see deploy/eldergate.example.toml).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file: print every problem with its key path; exit 1 if there is any.
    CheckConfig {
        /// The TOML config.
        file: PathBuf,
    },
    /// The community roster (residents and their cards) of a running gateway.
    Roster {
        /// The gateway's config (for its HTTP address).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        which: RosterCommand,
    },
    /// Write the broker's password file, ACL and a provisioning CSV from the registry (devices,
    /// staff, the gateway) into DIR, all mode 0600. Re-running adds new identities and keeps
    /// every existing secret. Secrets are never printed.
    Provision {
        /// The gateway's config (its registry: devices and staff).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        /// Output directory, e.g. /etc/eldergate/broker.
        #[arg(long)]
        out: PathBuf,
    },
    /// Canteen reports from a gateway's journal (read-only; the gateway may be running).
    Report {
        /// The gateway's config (for data_dir and the roster).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        which: Report,
    },
    /// A resident's health readings as a FHIR R4 Bundle of Observations (JSON, to stdout or
    /// --out), from a gateway's journal (read-only; the gateway may be running).
    Fhir {
        /// The gateway's config (for data_dir, the site and the time zone).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        /// Resident id.
        #[arg(long)]
        resident: String,
        /// First local date, YYYY-MM-DD (default: 30 days ago).
        #[arg(long)]
        from: Option<String>,
        /// Last local date, YYYY-MM-DD, inclusive (default: today).
        #[arg(long)]
        to: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Console accounts: passwords, invites, sessions (accounts.db in data_dir).
    User {
        /// The gateway's config (for data_dir and the staff registry).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        which: UserCommand,
    },
    /// API tokens for integrations (shown once, stored hashed).
    Token {
        /// The gateway's config (for data_dir and the staff registry).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        which: TokenCommand,
    },
    /// A consistent copy of the journal, taken while the gateway runs (SQLite `VACUUM INTO`).
    Backup {
        /// The gateway's config (for data_dir).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        /// The backup file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a backup in place of the journal (the gateway must be stopped). The journal it
    /// replaces is moved aside, never deleted; the restored journal continues above every seq
    /// the replaced journal, the central store or --seq-floor used.
    Restore {
        /// The gateway's config (for data_dir, http.listen and the central store).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Highest seq known to be used already (e.g. read from the central store by hand).
        #[arg(long)]
        seq_floor: Option<i64>,
    },
    /// The district's central PostgreSQL (docs/adr/0014).
    Central {
        /// The migrator's URL (a role that owns the schema and may create roles). Prefer the
        /// environment: a URL with a password on the command line is visible to every user.
        #[arg(long, env = "ELDERGATE_CENTRAL_MIGRATOR_URL", hide_env_values = true)]
        url: String,
        #[command(subcommand)]
        which: CentralCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Set a staff member's console password (argon2id), read from the first line of stdin;
    /// ends their sessions.
    SetPassword {
        /// Staff id from the staff registry.
        staff_id: String,
    },
    /// Print a one-time link (valid 72 h) with which a staff member sets their own password.
    Invite {
        /// Staff id from the staff registry.
        staff_id: String,
    },
    /// End every console session of a staff member now.
    Revoke {
        /// Staff id.
        staff_id: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token acting as a staff member, with scopes (read, alerts, canteen, roster, vitals,
    /// act_as); prints it once.
    Create {
        /// Staff id the token acts as (recorded as `by`).
        #[arg(long)]
        staff: String,
        /// A unique name, to revoke it by.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes.
        #[arg(long, default_value = "read")]
        scopes: String,
    },
    /// Revoke a token by name.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Opens the accounts database of the gateway named by `config`, and its staff registry.
async fn accounts(
    config: &std::path::Path,
) -> anyhow::Result<(eldergate::auth::AccountStore, eldergate::config::Loaded)> {
    let loaded = eldergate::config::load(config)?;
    let store = eldergate::auth::AccountStore::open(&loaded.config.data_dir).await?;
    Ok((store, loaded))
}

fn known_staff(loaded: &eldergate::config::Loaded, staff_id: &str) -> anyhow::Result<()> {
    if !loaded.staff.contains_key(staff_id) {
        anyhow::bail!("{staff_id:?} is not in the staff registry; add them under [[staff]] or to staff_csv first");
    }
    Ok(())
}

async fn user(config: PathBuf, which: UserCommand) -> anyhow::Result<()> {
    let (store, loaded) = accounts(&config).await?;
    match which {
        UserCommand::SetPassword { staff_id } => {
            known_staff(&loaded, &staff_id)?;
            eprintln!(
                "password for {staff_id} (one line on stdin, at least {} characters):",
                eldergate::auth::store::MIN_PASSWORD_CHARS
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            store
                .set_password(&staff_id, line.trim_end_matches(['\r', '\n']))
                .await?;
            println!("password of {staff_id} set; their sessions were ended");
        }
        UserCommand::Invite { staff_id } => {
            known_staff(&loaded, &staff_id)?;
            let secret = store.create_invite(&staff_id).await?;
            println!(
                "{}://{}/console/invite/{secret}  (one use, valid 72 h, for {staff_id})",
                if loaded.config.http.tls() {
                    "https"
                } else {
                    "http"
                },
                loaded.config.http.listen
            );
        }
        UserCommand::Revoke { staff_id } => {
            let n = store.end_sessions_of(&staff_id).await?;
            println!("{n} session(s) of {staff_id} ended");
        }
    }
    Ok(())
}

async fn token(config: PathBuf, which: TokenCommand) -> anyhow::Result<()> {
    let (store, loaded) = accounts(&config).await?;
    match which {
        TokenCommand::Create {
            staff,
            name,
            scopes,
        } => {
            known_staff(&loaded, &staff)?;
            for s in scopes.split(',') {
                if !eldergate::auth::SCOPES.contains(&s.trim()) {
                    anyhow::bail!(
                        "unknown scope {s:?}; use some of {}",
                        eldergate::auth::SCOPES.join(",")
                    );
                }
            }
            println!("{}", store.create_token(&staff, &name, &scopes).await?);
        }
        TokenCommand::Revoke { name } => {
            if !store.revoke_token(&name).await? {
                anyhow::bail!("no live token is named {name:?}");
            }
            println!("token {name:?} revoked");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum CentralCommand {
    /// Apply the central schema's migrations and create the monthly partitions for the next
    /// 12 months (idempotent; run it at every upgrade and monthly).
    Migrate,
    /// Create a gateway's login role (INSERT and SELECT on its own rows only) with a random
    /// password written to --password-file (mode 0600, never printed).
    AddGateway {
        /// The gateway's `gateway_id`.
        #[arg(long)]
        gateway_id: String,
        /// Its community (`site_id`).
        #[arg(long)]
        site_id: String,
        /// Where to write the password (must not exist).
        #[arg(long)]
        password_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Replace the roster with a new export (CSV with a header row, as residents_csv). Every row
    /// is checked first; nothing is imported if any row or reference is wrong.
    Import {
        /// The roster CSV.
        file: PathBuf,
        /// Staff id of who imports (recorded with the import); by default the token's staff
        /// member (another only with a token's `act_as` scope).
        #[arg(long)]
        by: Option<String>,
        /// API token with the `roster` scope (`eldergate token create`).
        #[arg(long, env = "ELDERGATE_TOKEN", hide_env_values = true)]
        token: String,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        /// The gateway's address, e.g. https://gateway.example:8443 when its certificate names
        /// a host. Default: the config's `[http] listen` (an unspecified address means this
        /// machine), over HTTPS when the config has `tls_cert` and `tls_key`.
        #[arg(long)]
        url: Option<String>,
        /// PEM file of the CA certificates to trust for HTTPS. Default: the certificates in the
        /// config's `tls_cert` (enough for a self-signed certificate or a chain that holds its
        /// CA).
        #[arg(long)]
        cacert: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Report {
    /// Daily summary (JSON): meals, gross, subsidy, paid by residents, by period.
    Daily {
        /// Local date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// Subsidy claim (month or quarter), CSV with UTF-8 BOM (to stdout or --out); docs/CANTEEN.md.
    Claim {
        /// Month `YYYY-MM`, or quarter `YYYY-Qn`.
        #[arg(long)]
        month: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

async fn report(config: PathBuf, which: Report) -> anyhow::Result<()> {
    let loaded = eldergate::config::load(&config)?;
    let registry = eldergate::registry::Registry::from(&loaded);
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(loaded.config.data_dir.join("journal.db"))
        .read_only(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .context("cannot open the journal (is data_dir right?)")?;
    match which {
        Report::Daily { date } => {
            let lines = eldergate::canteen::reports::daily(&pool, &date).await?;
            println!("{}", serde_json::to_string_pretty(&lines)?);
        }
        Report::Claim { month, out } => {
            let period = eldergate::canteen::claim::ClaimPeriod::parse(&month)
                .with_context(|| format!("--month {month:?}: use YYYY-MM or YYYY-Qn"))?;
            let csv = eldergate::canteen::claim::claim_csv(&pool, &registry, &period).await?;
            match out {
                Some(path) => std::fs::write(&path, csv)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&csv)?;
                }
            }
        }
    }
    Ok(())
}

async fn fhir(
    config: PathBuf,
    resident: String,
    from: Option<String>,
    to: Option<String>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    use eldergate::vitals::query::day_bound;
    let loaded = eldergate::config::load(&config)?;
    let tz = &loaded.config.time_zone;
    let now = jiff::Timestamp::now();
    let from = match from {
        Some(d) => day_bound(tz, &d, false).context("--from is not a date like 2026-11-01")?,
        None => eldergate::journal::format_ts(now - jiff::SignedDuration::from_hours(24 * 30)),
    };
    let to = match to {
        Some(d) => day_bound(tz, &d, true).context("--to is not a date like 2026-11-30")?,
        None => "9999-12-31T00:00:00.000Z".into(),
    };
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(loaded.config.data_dir.join("journal.db"))
        .read_only(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .context("cannot open the journal (is data_dir right?)")?;
    let readings =
        eldergate::vitals::query::history(&pool, &resident, &from, &to, i64::MAX).await?;
    let bundle = eldergate::vitals::fhir::bundle(
        &loaded.config.site_id,
        &loaded.config.gateway_id,
        &readings,
        &eldergate::journal::format_ts(now),
    );
    let text = serde_json::to_string_pretty(&bundle)?;
    match out {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

async fn central(url: String, which: CentralCommand) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("cannot connect to the central store as the migrator")?;
    match which {
        CentralCommand::Migrate => {
            let created = eldergate::central::migrate_postgres(&pool).await?;
            println!("central schema migrated; {created} monthly partition(s) created");
        }
        CentralCommand::AddGateway {
            gateway_id,
            site_id,
            password_file,
        } => {
            if password_file.exists() {
                anyhow::bail!("{} exists; choose a new file", password_file.display());
            }
            let (role, password) =
                eldergate::district::add_gateway(&pool, &gateway_id, &site_id).await?;
            eldergate::district::write_secret_file(&password_file, &password)?;
            println!(
                "role {role} created for gateway {gateway_id} ({site_id}); its password is in {} \
                 (give it to the gateway as central.password_file)",
                password_file.display()
            );
        }
    }
    Ok(())
}

async fn backup(config: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    let loaded = eldergate::config::load(&config)?;
    let summary = eldergate::backup::backup(&loaded.config.data_dir, &out).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

async fn restore(config: PathBuf, from: PathBuf, seq_floor: Option<i64>) -> anyhow::Result<()> {
    let loaded = eldergate::config::load(&config)?;
    let c = &loaded.config;
    let health = format!("http://{}/healthz", c.http.listen);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()?;
    // Over HTTPS a plain request fails even while the gateway runs: a listening port is enough.
    let running = if c.http.tls() {
        tokio::net::TcpStream::connect(c.http.listen).await.is_ok()
    } else {
        client.get(&health).send().await.is_ok()
    };
    if running {
        return Err(eldergate::backup::BackupError::Running(health).into());
    }
    let central_max_seq = central_max_seq(&c.central.url, &c.gateway_id).await;
    let summary = eldergate::backup::restore(eldergate::backup::RestoreRequest {
        data_dir: &c.data_dir,
        from: &from,
        central_max_seq,
        seq_floor,
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The highest seq the central store holds for this gateway (a gateway's role reads its own).
async fn central_max_seq(url: &str, gateway_id: &str) -> Result<Option<i64>, String> {
    if url.starts_with("sqlite:") {
        return Err("an embedded central store (sqlite:) is not consulted".into());
    }
    let ask = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        sqlx::query_scalar::<_, Option<i64>>("SELECT max(seq) FROM events WHERE gateway_id = $1")
            .bind(gateway_id)
            .fetch_one(&pool)
            .await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), ask).await {
        Ok(Ok(v)) => Ok(v),
        // The error of a connection names the host, never the password.
        Ok(Err(e)) => Err(format!("{e}")),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// Sends a roster to the running gateway named by `config` and prints its answer.
async fn roster(config: PathBuf, which: RosterCommand) -> anyhow::Result<()> {
    let RosterCommand::Import {
        file,
        by,
        token,
        dry_run,
        url,
        cacert,
    } = which;
    let loaded = eldergate::config::load(&config)?;
    let csv = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let (client, base) = api_client(&loaded.config.http, url, cacert)?;
    let url = format!("{}/api/roster", base.trim_end_matches('/'));
    let mut query = vec![(
        "dry_run",
        if dry_run { "true" } else { "false" }.to_string(),
    )];
    if let Some(by) = by {
        query.push(("by", by));
    }
    let response = client
        .post(&url)
        .bearer_auth(token.trim())
        .query(&query)
        .header("content-type", "text/csv; charset=utf-8")
        .body(csv)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the gateway at {url} (is it running? over HTTPS, does --cacert hold the CA of its certificate, and does --url name a host the certificate holds?): {}",
                eldergate::tls::describe(e)
            )
        })?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("the gateway at {url} answered {status} with no JSON"))?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    if !status.is_success() {
        anyhow::bail!(
            "the roster was not imported: {}",
            body["error"].as_str().unwrap_or("see above")
        );
    }
    Ok(())
}

/// A client for the running gateway's API and its base URL: `url` if given, else the config's
/// listen address (loopback for an unspecified one), HTTPS when the config serves it; trusting
/// `cacert`, else the config's own certificates.
fn api_client(
    http: &eldergate::config::HttpConfig,
    url: Option<String>,
    cacert: Option<PathBuf>,
) -> anyhow::Result<(reqwest::Client, String)> {
    let base = url.unwrap_or_else(|| {
        let mut addr = http.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let scheme = if http.tls() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    });
    let mut builder = reqwest::Client::builder();
    if base.starts_with("https://") {
        eldergate::tls::install_crypto_provider();
        let pem_file = cacert.or_else(|| http.tls_cert.clone());
        if let Some(path) = pem_file {
            for c in eldergate::tls::load_ca_file(&path)? {
                builder = builder.add_root_certificate(c);
            }
        }
    }
    Ok((builder.build()?, base))
}

/// `eldergate provision`: needs no broker secret (it connects to nothing), so a missing
/// `broker.password` is not a problem here.
fn provision(config: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if !env.iter().any(|(k, _)| k == "ELDERGATE__BROKER__PASSWORD") {
        env.push((
            "ELDERGATE__BROKER__PASSWORD".into(),
            "(not needed to provision)".into(),
        ));
    }
    let loaded = eldergate::config::load_with_env(&config, env)?;
    let s = eldergate::provision::provision(&loaded, &out)?;
    println!(
        "{}: {} identities kept, {} added{}",
        s.dir.display(),
        s.kept.len(),
        s.added.len(),
        if s.added.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.added.join(" "))
        }
    );
    if !s.stale.is_empty() {
        println!(
            "not in the registry any more (no topic rights; delete their lines from {} to refuse them at connect): {}",
            eldergate::provision::PASSWD_FILE,
            s.stale.join(" ")
        );
    }
    println!(
        "hand out {} to installers and keep it private; reload Mosquitto to apply",
        out.join(eldergate::provision::CSV_FILE).display()
    );
    Ok(())
}

/// Exit status of `run` when its config is wrong (sysexits.h `EX_CONFIG`): the systemd unit
/// says `RestartPreventExitStatus=78`, so a wrong config is not restarted in a loop.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match eldergate::config::load(&file) {
            Ok(l) => {
                println!(
                    "{}: ok ({} devices, {} residents, {} staff)",
                    file.display(),
                    l.devices.len(),
                    l.residents.len(),
                    l.staff.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Provision { config, out } => match provision(config, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let loaded = match eldergate::config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            // Before the runtime (or anything else) starts a thread.
            if loaded.config.broker.mode == eldergate::config::BrokerMode::Embedded {
                eldergate::broker::limit_malloc_arenas();
            }
            eldergate::app::init_logs_as(
                "info,rumqttd=warn,sqlx=warn,rumqttc=warn",
                loaded.config.log.format,
            );
            let result = tokio::runtime::Runtime::new()
                .context("cannot start the async runtime")
                .and_then(|rt| {
                    rt.block_on(eldergate::app::run(loaded, eldergate::app::stop_signal()))
                });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("eldergate stopped with an error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            // The tools log for a person at a terminal; `run` (above) logs in its config's format.
            eldergate::app::init_logs("info,rumqttd=warn,sqlx=warn,rumqttc=warn");
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = rt.block_on(async move {
                match command {
                    Command::Report { config, which } => report(config, which).await,
                    Command::Fhir {
                        config,
                        resident,
                        from,
                        to,
                        out,
                    } => fhir(config, resident, from, to, out).await,
                    Command::Roster { config, which } => roster(config, which).await,
                    Command::User { config, which } => user(config, which).await,
                    Command::Token { config, which } => token(config, which).await,
                    Command::Backup { config, out } => backup(config, out).await,
                    Command::Restore {
                        config,
                        from,
                        seq_floor,
                    } => restore(config, from, seq_floor).await,
                    Command::Central { url, which } => central(url, which).await,
                    Command::CheckConfig { .. }
                    | Command::Provision { .. }
                    | Command::Run { .. } => Ok(()),
                }
                .context("eldergate stopped with an error")
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The options in `JEMALLOC_CONF` reach jemalloc (a wrong symbol name would be ignored
    /// silently, and the gateway would run with jemalloc's default of 4 arenas per core).
    #[cfg(all(feature = "embedded-broker", target_os = "linux"))]
    #[test]
    fn the_embedded_broker_build_allocates_with_one_jemalloc_arena_and_no_thread_caches() {
        let mut narenas: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>();
        // SAFETY: "opt.narenas" is an unsigned int; the output pointer and its length match it.
        let r = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"opt.narenas".as_ptr(),
                (&mut narenas as *mut libc::c_uint).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(r, 0, "mallctl opt.narenas failed");
        assert_eq!(narenas, 1);
        let mut tcache = true;
        let mut len = std::mem::size_of::<bool>();
        // SAFETY: "opt.tcache" is a bool; the output pointer and its length match it.
        let r = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"opt.tcache".as_ptr(),
                (&mut tcache as *mut bool).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(r, 0, "mallctl opt.tcache failed");
        assert!(!tcache);
        assert_eq!(
            super::JEMALLOC_CONF.last(),
            Some(&0),
            "malloc_conf must end in NUL"
        );
    }
}

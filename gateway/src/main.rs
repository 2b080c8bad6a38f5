//! The `eldergate` command: run the gateway, check a config, import a roster, print canteen
//! reports. The demo and the device simulator are the `eldergate-sim` binary (crate sim/).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Canteen reports from a gateway's journal (read-only; the gateway may be running).
    Report {
        /// The gateway's config (for data_dir and the roster).
        #[arg(long, short, env = "ELDERGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        which: Report,
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
    /// Create a token acting as a staff member, with scopes (read, alerts, canteen, roster,
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
                "http://{}/console/invite/{secret}  (one use, valid 72 h, for {staff_id})",
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

/// Sends a roster to the running gateway named by `config` and prints its answer.
async fn roster(config: PathBuf, which: RosterCommand) -> anyhow::Result<()> {
    let RosterCommand::Import {
        file,
        by,
        token,
        dry_run,
    } = which;
    let loaded = eldergate::config::load(&config)?;
    let csv = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let url = format!("http://{}/api/roster", loaded.config.http.listen);
    let mut query = vec![(
        "dry_run",
        if dry_run { "true" } else { "false" }.to_string(),
    )];
    if let Some(by) = by {
        query.push(("by", by));
    }
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.trim())
        .query(&query)
        .header("content-type", "text/csv; charset=utf-8")
        .body(csv)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url} (is it running?)"))?;
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
        command => {
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
                    Command::Run { config } => {
                        let loaded = eldergate::config::load(&config)?;
                        eldergate::app::run(loaded, eldergate::app::stop_signal()).await
                    }
                    Command::Report { config, which } => report(config, which).await,
                    Command::Roster { config, which } => roster(config, which).await,
                    Command::User { config, which } => user(config, which).await,
                    Command::Token { config, which } => token(config, which).await,
                    Command::CheckConfig { .. } => Ok(()),
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

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
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Replace the roster with a new export (CSV with a header row, as residents_csv). Every row
    /// is checked first; nothing is imported if any row or reference is wrong.
    Import {
        /// The roster CSV.
        file: PathBuf,
        /// Staff id of who imports (recorded with the import).
        #[arg(long)]
        by: String,
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
    /// Monthly subsidy claim per resident, CSV with UTF-8 BOM (to stdout or --out).
    Claim {
        /// Month, YYYY-MM.
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
            let csv = eldergate::canteen::reports::claim_csv(&pool, &registry, &month).await?;
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
    let RosterCommand::Import { file, by, dry_run } = which;
    let loaded = eldergate::config::load(&config)?;
    let csv = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let url = format!("http://{}/api/roster", loaded.config.http.listen);
    let response = reqwest::Client::new()
        .post(&url)
        .query(&[
            ("by", by.as_str()),
            ("dry_run", if dry_run { "true" } else { "false" }),
        ])
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
            eldergate::app::init_logs("info,rumqttd=warn,sqlx=warn,rumqttc=warn");
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
                    Command::Roster { config, which } => roster(config, which).await,
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

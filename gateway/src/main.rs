//! The `eldergate` command: run the gateway, check a config, run the demo, simulate devices.

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
    /// The demo: embedded broker, embedded central store, simulated buttons and staff.
    Demo(eldergate::demo::DemoArgs),
    /// Simulated alarm buttons against a broker (for load and manual testing).
    Sim(eldergate::sim::SimArgs),
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

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
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
            // The demo prints its own story; its logs show warnings only unless RUST_LOG says more.
            init_logs(match command {
                Command::Demo(_) => "warn,rumqttd=error",
                _ => "info,rumqttd=warn,sqlx=warn,rumqttc=warn",
            });
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
                        eldergate::app::run(loaded, stop_signal()).await
                    }
                    Command::Demo(args) => eldergate::demo::run(args, stop_signal()).await,
                    Command::Sim(args) => eldergate::sim::run_cli(args, stop_signal()).await,
                    Command::Report { config, which } => report(config, which).await,
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

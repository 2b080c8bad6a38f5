//! The `eldergate-sim` command: the demo, and firmware devices simulated on the host. The
//! gateway itself is the `eldergate` binary; this one is never installed on a gateway.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "eldergate-sim",
    version,
    about = "Demo and device simulator for the eldergate gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The demo: the gateway with its embedded broker and embedded central store, simulated
    /// buttons, a card reader and staff.
    Demo(eldergate_sim::demo::DemoArgs),
    /// Firmware devices (alarm buttons, card readers) on the host, over MQTT or a serial port.
    Sim(eldergate_sim::cli::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; its logs show warnings only unless RUST_LOG says more.
    eldergate::app::init_logs(match cli.command {
        Command::Demo(_) => "warn,rumqttd=error",
        Command::Sim(_) => "info,rumqttd=warn,sqlx=warn,rumqttc=warn",
    });
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Demo(args) => {
                eldergate_sim::demo::run(args, eldergate::app::stop_signal()).await
            }
            Command::Sim(args) => {
                eldergate_sim::cli::run_cli(args, eldergate::app::stop_signal()).await
            }
        }
        .context("eldergate-sim stopped with an error")
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

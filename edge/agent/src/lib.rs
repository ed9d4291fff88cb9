//! The Constella edge agent (the `constella` binary's body): polls KUB-1063 climate controllers over Modbus RTU and
//! TCP and serves their decoded data over an authenticated HTTP API. It also carries the KUB-1063
//! simulator (`constella sim`) and a self-contained demo (`constella demo`).

mod agent;
mod api;
mod bot;
mod cli;
mod client;
mod cluster;
mod config;
mod demo;
mod devices;
mod events;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod listener;
mod modbus;
mod outcome;
mod recorder;
mod serial;
mod shutdown;
mod speedtest;
mod state;
mod store;
mod telemetry;
mod throttle;
mod wg;

use clap::Parser as _;

/// Parses the command line, sets up logging and runs the chosen command; the binary's `main`.
pub fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_filter())),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match try_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn try_main(cli: cli::Cli) -> anyhow::Result<()> {
    // One worker thread is plenty for a handful of buses and the API, and keeps RSS small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli.command.run())
}

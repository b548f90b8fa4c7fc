//! The `dormouse` binary: the library with the built-in party kinds, driven by
//! a TOML config.

use clap::{Parser, Subcommand};
use dormouse::{Config, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "dormouse", version, about = "A hibernation-first, PartyKit-compatible room server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML config file; without it the embedded default config is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::DefaultConfig => {
            print!("{}", dormouse::config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
        Command::Serve { config, listen } => {
            let config = match &config {
                Some(path) => Config::from_file(path),
                None => Ok(Config::embedded_default()),
            };
            let mut config = match config {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("dormouse: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(listen) = listen {
                config.listen = listen;
            }
            match Server::new(config).start() {
                Ok(server) => {
                    server.wait();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dormouse: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

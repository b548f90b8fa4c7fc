//! The `dormouse` binary: the library with the built-in party kinds, driven by
//! a TOML config.

use clap::{Parser, Subcommand};
use dormouse::config::IoBackend;
use dormouse::{Config, Server, StartError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

mod connect;

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
        /// I/O backend, overriding the config's `io`.
        #[arg(long, value_enum)]
        io: Option<IoBackend>,
        /// Data directory (snapshots, room storage, alarms), overriding the config's `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A PartyKit project's partykit.json: its parties, vars and static
        /// files. Without --config, they replace the default config's parties.
        #[arg(long)]
        partykit: Option<PathBuf>,
    },
    /// Print the embedded default config.
    DefaultConfig,
    /// Open a WebSocket to a room and talk to it from the terminal: each line
    /// typed is sent as a text message, each message received is printed.
    Connect {
        /// The room's URL, e.g. ws://127.0.0.1:1999/parties/main/lobby?_pk=ann
        url: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::DefaultConfig => {
            print!("{}", dormouse::config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
        Command::Connect { url } => match connect::run(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dormouse connect: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Serve { config, listen, io, data_dir, partykit } => {
            let config = match &config {
                Some(path) => Config::from_file(path),
                None if partykit.is_some() => Ok(Config { parties: Default::default(), ..Config::embedded_default() }),
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
            if let Some(io) = io {
                config.io = io;
            }
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            if let Some(partykit) = partykit {
                config.partykit = Some(partykit);
            }
            match Server::new(config).run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dormouse: {e}");
                    // A forced backend that cannot run, a taken address or
                    // data directory: the configuration must change.
                    let usage = matches!(
                        e,
                        StartError::Uring(_)
                            | StartError::AddrInUse { .. }
                            | StartError::DataDirInUse { .. }
                            | StartError::Script(_)
                            | StartError::Project(_)
                            | StartError::Static(_)
                    );
                    ExitCode::from(if usage { 2 } else { 1 })
                }
            }
        }
    }
}

//! The command line: parse arguments, load the config, start the runtime. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use district_gateway::{config, ops, runtime};

#[derive(Parser)]
#[command(
    name = "district-gateway",
    version,
    about = "District gateway: LoRaWAN and meters in, local control, store-and-forward to MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "/etc/district-gateway/gateway.toml";

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or exit 2 listing every problem as FILE:LINE:COL: key: problem.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// A simulated district on this machine: embedded broker, simulated devices, the real daemon.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Use this broker (mqtt://host:port) instead of the embedded one.
        #[arg(long)]
        broker: Option<String>,
    },
    /// Run only the embedded MQTT broker on ADDR (for tests and experiments).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    Broker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        bind: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(c) => {
                println!("{}: ok ({} devices, {} sources)", config.display(), c.device.len(), c.source.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("district-gateway: refusing to start with an invalid config");
                    return ExitCode::from(2);
                }
            };
            ops::logging::init(&cfg.gateway.log_level);
            block_on(runtime::run_until_signal(cfg))
        }
        #[cfg(feature = "demo")]
        Command::Demo { seconds, broker } => {
            ops::logging::init("warn,rumqttd=off");
            block_on(district_gateway::sim::demo::run(seconds, broker))
        }
        #[cfg(feature = "demo")]
        Command::Broker { bind } => {
            ops::logging::init("warn,rumqttd=off");
            match district_gateway::sim::broker::run_blocking(bind) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("district-gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("district-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("district-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The command line: parse arguments, load the config, start the runtime. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use district_gateway::{config, ops, runtime};

mod cli_decode;

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
    /// Decode one telegram or payload: `decode wmbus [--key HEX] TELEGRAM_HEX`, `decode lorawan --profile P --port N HEX`.
    Decode {
        #[command(subcommand)]
        what: cli_decode::DecodeCommand,
    },
    /// A simulated district on this machine: embedded broker, simulated devices, the real daemon.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this many real seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Simulated seconds per real second (900: a night passes in a minute).
        #[arg(long, default_value_t = 900.0)]
        speed: f64,
        /// Write a night-and-day report (HTML with SVG charts) to PATH at the end.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// Use this broker (mqtt://host:port) instead of the embedded one (then there is no outage).
        #[arg(long)]
        broker: Option<String>,
    },
    /// Traffic generator: encrypted LoRaWAN uplinks for the devices in FILE as Semtech UDP PUSH_DATA.
    Simulate {
        /// The packet-forwarder address of the gateway, e.g. 127.0.0.1:1700.
        #[arg(long)]
        gwmp: Option<std::net::SocketAddr>,
        /// A devices file (`[[device]]` tables, the `devices_file` format).
        #[arg(long)]
        devices: PathBuf,
        /// Uplinks per second, all devices together.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// First frame counter of every device.
        #[arg(long, default_value_t = 0)]
        fcnt_start: u32,
        /// Also write `DEVICE FCNT`, one line per uplink acknowledged (PUSH_ACK), to FILE (benchmarks).
        #[arg(long, value_name = "FILE")]
        acked_log: Option<PathBuf>,
        /// Instead of sending: write N generated ABP devices to the devices file and exit.
        #[arg(long, value_name = "N")]
        make_devices: Option<u32>,
        /// Profile of generated devices.
        #[arg(long, default_value = "milesight-em310-udl")]
        profile: String,
    },
    /// Run only the embedded MQTT broker on ADDR (for tests and experiments).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    Broker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        bind: std::net::SocketAddr,
        /// Also listen for MQTT over TLS here (needs --tls-ca, --tls-cert, --tls-key).
        #[arg(long, requires_all = ["tls_ca", "tls_cert", "tls_key"])]
        tls_bind: Option<std::net::SocketAddr>,
        /// CA (PEM) that client certificates must be signed by.
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
        /// The broker's certificate (PEM).
        #[arg(long)]
        tls_cert: Option<std::path::PathBuf>,
        /// The broker's private key (PEM).
        #[arg(long)]
        tls_key: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    district_gateway::runtime::install_crypto_provider();
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
        Command::Decode { what } => cli_decode::run(what),
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
            block_on(runtime::supervisor::run(config, cfg))
        }
        Command::Simulate { gwmp, devices, rate, seconds, fcnt_start, acked_log, make_devices, profile } => {
            use district_gateway::sim::simulate;
            if let Some(n) = make_devices {
                return match simulate::make_devices(&devices, n, &profile) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("district-gateway: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            let Some(gwmp) = gwmp else {
                eprintln!("district-gateway: simulate needs --gwmp ADDR");
                return ExitCode::from(2);
            };
            ops::logging::init("warn");
            block_on(async move {
                let r = simulate::run(simulate::SimulateArgs { gwmp, devices, rate, seconds, fcnt_start }).await?;
                println!(
                    "sent {} uplinks in {:.2} s ({:.0}/s); {} acknowledged (PUSH_ACK), ack latency p50 {:.2} ms, p99 {:.2} ms",
                    r.sent,
                    r.elapsed.as_secs_f64(),
                    r.sent as f64 / r.elapsed.as_secs_f64().max(1e-9),
                    r.acked,
                    r.ack_p50_us as f64 / 1000.0,
                    r.ack_p99_us as f64 / 1000.0
                );
                if let Some(path) = acked_log {
                    let lines: String = r.acked_frames.iter().map(|(d, f)| format!("{d} {f}\n")).collect();
                    std::fs::write(&path, lines).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                }
                Ok(())
            })
        }
        #[cfg(feature = "demo")]
        Command::Demo { seconds, speed, report, broker } => {
            // The live view is the demo's output; the daemon's own warnings (e.g. about the planned
            // broker outage) would only clutter it.
            ops::logging::init("error,rumqttd=off");
            if !(speed.is_finite() && (0.1..=10_000.0).contains(&speed)) {
                eprintln!("district-gateway: --speed must be 0.1..=10000");
                return ExitCode::from(2);
            }
            let args = district_gateway::sim::demo::DemoArgs { seconds, speed, broker, report };
            block_on(district_gateway::sim::demo::run(args))
        }
        #[cfg(feature = "demo")]
        Command::Broker { bind, tls_bind, tls_ca, tls_cert, tls_key } => {
            ops::logging::init("warn,rumqttd=off");
            let tls = match (tls_bind, tls_ca, tls_cert, tls_key) {
                (Some(bind), Some(ca), Some(cert), Some(key)) => {
                    Some(district_gateway::sim::broker::TlsListener { bind, ca, cert, key })
                }
                _ => None,
            };
            match district_gateway::sim::broker::run_blocking(bind, tls.as_ref()) {
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

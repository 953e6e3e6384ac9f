//! The `fedns` command line: `serve` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fedns",
    version,
    about = "Federated authoritative DNS for services that run in many Kubernetes clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS for the configured zones and federations.
    Serve {
        #[arg(long, short, default_value = "config/fedns.yaml")]
        config: PathBuf,
        /// UDP workers per listen address (overrides the config; 0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate the config, zone files and federation files; print every problem.
    Check {
        #[arg(long, short, default_value = "config/fedns.yaml")]
        config: PathBuf,
    },
    /// Ask a running fedns (over its HTTP port) why it answers NAME the way it does.
    Explain {
        name: String,
        /// Query type.
        #[arg(long = "type", short = 't', default_value = "A")]
        qtype: String,
        /// The client's address (the packet source fedns would see).
        #[arg(long)]
        client: Option<std::net::IpAddr>,
        /// An EDNS Client Subnet, e.g. 198.51.100.0/24.
        #[arg(long)]
        ecs: Option<String>,
        /// The server's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8053")]
        server: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { config, workers } => fedns::app::serve(&config, workers),
        Command::Check { config } => fedns::app::check(&config),
        Command::Explain {
            name,
            qtype,
            client,
            ecs,
            server,
        } => fedns::app::explain(&server, &name, &qtype, client, ecs.as_deref()),
    }
}

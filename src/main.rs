//! The `fedns` command line: `serve`, `check`, `explain`, `dnssec`, `join`, `unjoin`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// jemalloc, not glibc's malloc: see Cargo.toml. The query path allocates nothing, so this
/// only changes what builds and sources cost, and how much of it RSS keeps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_rjem_` is the crate's symbol prefix): freed pages go
/// back to the system within a second (the default is ten) and without a second, "muzzy",
/// stage, so RSS follows the live heap after a build rather than its peak.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: it points at a static C string that is never written.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe impl Sync for MallocConf {}

#[derive(Parser)]
#[command(
    name = "fedns",
    version,
    about = "Federated authoritative DNS for services that run in many Kubernetes clusters"
)]
struct Cli {
    /// Log format: `text` (logfmt) or `json`; default: `log_format` in the config, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<fedns::logging::LogFormat>,
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
        /// Print the JSON form (see README, "explain").
        #[arg(long)]
        json: bool,
    },
    /// Give fedns a read-only identity in a member cluster (ServiceAccount, ClusterRole and
    /// binding, token Secret), write its kubeconfig under kubeconfigs/ beside the config and add
    /// the cluster to `kubernetes.clusters` (the running fedns picks it up).
    Join {
        #[command(flatten)]
        member: MemberArgs,
        /// The admin context for the member cluster.
        #[arg(long)]
        context: String,
        /// The cluster's region (default: read from its Nodes).
        #[arg(long)]
        region: Option<String>,
        /// The cluster's zones, comma-separated (default: read from its Nodes).
        #[arg(long, value_delimiter = ',')]
        zones: Vec<String>,
        /// For a fedns deployed with deploy/kubernetes: instead of writing kubeconfigs/, write
        /// (`-`: print) a patch adding the member's kubeconfig as one key of the hub's Secret
        /// fedns-kubeconfigs (`kubectl -n fedns patch secret fedns-kubeconfigs --patch-file
        /// FILE`; the other members' keys stay), and name it in the config as mounted.
        #[arg(long, value_name = "FILE")]
        secret_manifest: Option<PathBuf>,
        /// Where the Deployment mounts fedns-kubeconfigs (with --secret-manifest).
        #[arg(long, value_name = "DIR", default_value = fedns::sources::kubernetes::join::HUB_MOUNT, requires = "secret_manifest")]
        mounted_at: PathBuf,
    },
    /// Remove a cluster from `kubernetes.clusters`, delete the kubeconfig join wrote, and (with
    /// --context) fedns's ServiceAccount, ClusterRole, binding and Secret in the member.
    Unjoin {
        #[command(flatten)]
        member: MemberArgs,
        /// The admin context for the member cluster; without it the member is not touched.
        #[arg(long)]
        context: Option<String>,
        /// Also write (`-`: print) the patch that removes the cluster's key from the hub's
        /// Secret fedns-kubeconfigs (the other members' keys stay).
        #[arg(long, value_name = "FILE")]
        secret_manifest: Option<PathBuf>,
    },
    /// DNSSEC key management.
    Dnssec {
        #[command(subcommand)]
        command: DnssecCommand,
    },
}

/// What `join` and `unjoin` both take.
#[derive(Args)]
struct MemberArgs {
    /// The cluster's name in the fedns config.
    cluster: String,
    /// The admin kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[arg(long, short, default_value = "config/fedns.yaml")]
    config: PathBuf,
    /// The namespace of fedns's ServiceAccount in the member (join creates it if missing).
    #[arg(long, default_value = "fedns-system")]
    namespace: String,
    /// Print what would be created, deleted and changed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum DnssecCommand {
    /// Print each signed zone's DS record (for its parent) and DNSKEY (a resolver's trust
    /// anchor), generating the keys first when the keys directory has none.
    Ds {
        #[arg(long, short, default_value = "config/fedns.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    // `serve` starts logging once it has read the config (which may name the format).
    if !matches!(cli.command, Command::Serve { .. }) {
        fedns::logging::init(log_format.unwrap_or_default());
    }
    match cli.command {
        Command::Serve { config, workers } => fedns::app::serve(&config, workers, log_format),
        Command::Check { config } => fedns::app::check(&config),
        Command::Explain {
            name,
            qtype,
            client,
            ecs,
            server,
            json,
        } => fedns::app::explain(&server, &name, &qtype, client, ecs.as_deref(), json),
        Command::Join {
            member: m,
            context,
            region,
            zones,
            secret_manifest,
            mounted_at,
        } => fedns::app::join(&fedns::sources::kubernetes::join::JoinArgs {
            cluster: m.cluster,
            context,
            kubeconfig: m.kubeconfig,
            config: m.config,
            namespace: m.namespace,
            region,
            zones,
            dry_run: m.dry_run,
            output: match secret_manifest {
                Some(manifest) => fedns::sources::kubernetes::join::Output::SecretPatch {
                    manifest,
                    mounted_at,
                },
                None => fedns::sources::kubernetes::join::Output::File,
            },
        }),
        Command::Unjoin {
            member: m,
            context,
            secret_manifest,
        } => fedns::app::unjoin(&fedns::sources::kubernetes::join::UnjoinArgs {
            cluster: m.cluster,
            context,
            kubeconfig: m.kubeconfig,
            config: m.config,
            namespace: m.namespace,
            dry_run: m.dry_run,
            secret_manifest,
        }),
        Command::Dnssec {
            command: DnssecCommand::Ds { config },
        } => fedns::app::dnssec_ds(&config),
    }
}

//! `fedns join` / `fedns unjoin` (as `kubefed join/unjoin` did): with the operator's admin
//! kubeconfig context, give fedns a read-only identity in a member cluster and add the cluster to
//! the fedns config; or take both away again.
//!
//! Join applies, in the member: the namespace, the reader ServiceAccount, a ClusterRole with
//! exactly the verbs the enabled sources need (the same rules as `deploy/kubernetes/rbac/`), its
//! ClusterRoleBinding and a `kubernetes.io/service-account-token` Secret, then waits (bounded)
//! for the token controller to fill the token. It writes a member kubeconfig (the admin
//! context's server and CA, the token as the user; mode 0600) under `kubeconfigs/` beside the
//! config, and adds one flow-style line to `kubernetes.clusters`. Applying is idempotent (create,
//! else update); a cluster name already in the config is refused before anything is touched.
//!
//! Guarantees: the config is edited as text (comments and layout kept), the edited text is
//! validated with the real config loader before it replaces the file, and it replaces it by
//! rename, so the running fedns (which follows its config file) never reads a half-written or
//! invalid config. `--dry-run` reads only local files and changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::config::Access;
use crate::config::Config;

/// What `fedns join` is asked to do.
pub struct JoinArgs {
    pub cluster: String,
    pub context: String,
    pub kubeconfig: Option<PathBuf>,
    pub config: PathBuf,
    pub namespace: String,
    pub region: Option<String>,
    pub zones: Vec<String>,
    pub dry_run: bool,
    /// Where the kubeconfig goes: a file under `kubeconfigs/`, or a patch of the hub's Secret.
    pub output: Output,
}

/// What `fedns unjoin` is asked to do.
pub struct UnjoinArgs {
    pub cluster: String,
    pub context: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub config: PathBuf,
    pub namespace: String,
    pub dry_run: bool,
    /// `Some`: also write the patch that takes the cluster's key out of the hub's Secret.
    pub secret_manifest: Option<PathBuf>,
}

/// Where `join` puts the member kubeconfig.
pub enum Output {
    /// `kubeconfigs/CLUSTER.yaml` beside the config (a fedns reading local files).
    File,
    /// A patch document (`-`: stdout) for `kubectl patch secret fedns-kubeconfigs
    /// --patch-file`, adding the key `CLUSTER` to the Secret the deploy/ Deployment mounts at
    /// `mounted_at`, which is what the config line names. A patch, not the whole Secret: it
    /// leaves every other member's key as it is.
    SecretPatch {
        manifest: PathBuf,
        mounted_at: PathBuf,
    },
}

/// Set while a patch goes to stdout: progress lines then go to stderr, so stdout is the patch
/// alone (`fedns join … --secret-manifest - | kubectl patch … --patch-file /dev/stdin`).
static PROGRESS_TO_STDERR: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A progress line: stdout, or stderr while stdout carries a patch.
macro_rules! say {
    ($($t:tt)*) => {
        if PROGRESS_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!($($t)*)
        } else {
            println!($($t)*)
        }
    };
}

/// The Secret of deploy/kubernetes/base that holds one kubeconfig per member.
pub const HUB_SECRET: (&str, &str) = ("fedns", "fedns-kubeconfigs");
/// Where deploy/kubernetes/base/deployment.yaml mounts [`HUB_SECRET`].
pub const HUB_MOUNT: &str = "/etc/fedns-kubeconfigs";

/// How long join waits for the token controller to fill the Secret's token.
const TOKEN_WAIT: Duration = Duration::from_secs(30);

/// The names of the objects join creates in a member, per federation (so two federations can
/// join the same cluster, and none clashes with the deploy/ manifests' `fedns-reader`).
struct Names {
    namespace: String,
    account: String,
    secret: String,
}

impl Names {
    fn new(namespace: &str, federation: &str) -> Names {
        let account = format!("fedns-reader-{federation}");
        Names {
            namespace: namespace.to_string(),
            secret: format!("{account}-token"),
            account,
        }
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "fedns".to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "fedns-join".to_string(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: ["get", "list", "watch"].map(String::from).to_vec(),
        ..PolicyRule::default()
    }
}

/// Which optional sources a member cluster has on: `(dns_endpoints, gateway_api,
/// service_imports)`.
type Optional = (bool, bool, bool);

/// The rules of `deploy/kubernetes/rbac/clusterrole.yaml`, plus its `dns-endpoints`,
/// `gateway-api` and `service-imports` components when those sources are enabled.
fn rules((dns_endpoints, gateway_api, service_imports): Optional) -> Vec<PolicyRule> {
    let mut r = vec![
        rule("", &["services", "nodes"]),
        rule("discovery.k8s.io", &["endpointslices"]),
        rule("networking.k8s.io", &["ingresses"]),
    ];
    if dns_endpoints {
        r.push(rule("externaldns.k8s.io", &["dnsendpoints"]));
    }
    if gateway_api {
        r.push(rule(
            "gateway.networking.k8s.io",
            &["gateways", "httproutes"],
        ));
    }
    if service_imports {
        r.push(rule("multicluster.x-k8s.io", &["serviceimports"]));
    }
    r
}

struct Objects {
    namespace: Namespace,
    account: ServiceAccount,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    secret: Secret,
}

fn objects(n: &Names, optional: Optional) -> Objects {
    let ns = Some(n.namespace.as_str());
    let mut secret_meta = meta(&n.secret, ns);
    secret_meta.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".to_string(),
        n.account.clone(),
    )]));
    Objects {
        namespace: Namespace {
            metadata: meta(&n.namespace, None),
            ..Namespace::default()
        },
        account: ServiceAccount {
            metadata: meta(&n.account, ns),
            ..ServiceAccount::default()
        },
        role: ClusterRole {
            metadata: meta(&n.account, None),
            rules: Some(rules(optional)),
            ..ClusterRole::default()
        },
        binding: ClusterRoleBinding {
            metadata: meta(&n.account, None),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: n.account.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: n.account.clone(),
                namespace: Some(n.namespace.clone()),
                ..Subject::default()
            }]),
        },
        secret: Secret {
            metadata: secret_meta,
            type_: Some("kubernetes.io/service-account-token".into()),
            ..Secret::default()
        },
    }
}

/// A name that can stand unquoted in a flow-style YAML line and in a file name.
fn plain_name(what: &str, s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !s.starts_with(['-', '.']);
    anyhow::ensure!(
        ok,
        "{what} {s:?}: use letters, digits, '-', '.' and '_' only"
    );
    Ok(())
}

/// The admin kubeconfig: `--kubeconfig`, else `$KUBECONFIG` (its first file), else
/// `~/.kube/config`.
fn admin_kubeconfig(path: Option<&Path>) -> anyhow::Result<(PathBuf, Kubeconfig)> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(v) => std::env::split_paths(&v)
                .next()
                .ok_or_else(|| anyhow::anyhow!("KUBECONFIG is empty"))?,
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
            }
        },
    };
    let kc = Kubeconfig::read_from(&path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the kubeconfig: {e}", path.display()))?;
    Ok((path, kc))
}

/// The server and CA (as base64 data) the admin context connects to, for the member kubeconfig.
struct Endpoint {
    server: String,
    ca_data: Option<String>,
    insecure: bool,
}

fn endpoint(path: &Path, kc: &Kubeconfig, context: &str) -> anyhow::Result<Endpoint> {
    let at = path.display();
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| anyhow::anyhow!("{at}: no context {context:?}"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow::anyhow!("{at}: context {context:?} names no known cluster"))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{at}: cluster {:?} has no server", ctx.cluster))?;
    let ca_data = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(file)) => {
            // Relative CA paths are relative to the kubeconfig, as kubectl reads them.
            let file = path.parent().unwrap_or(Path::new("")).join(file);
            let pem = std::fs::read(&file).map_err(|e| {
                anyhow::anyhow!("{}: cannot read the cluster's CA: {e}", file.display())
            })?;
            use base64::Engine as _;
            Some(base64::engine::general_purpose::STANDARD.encode(pem))
        }
        (None, None) => None,
    };
    Ok(Endpoint {
        server,
        ca_data,
        insecure: cluster.insecure_skip_tls_verify == Some(true),
    })
}

fn member_kubeconfig(cluster: &str, user: &str, ep: &Endpoint, token: &str) -> String {
    let mut s = format!(
        "# Written by `fedns join {cluster}`: fedns's read-only identity in {cluster}.\napiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {}\n",
        ep.server
    );
    if let Some(ca) = &ep.ca_data {
        s.push_str(&format!("    certificate-authority-data: {ca}\n"));
    }
    if ep.insecure {
        s.push_str("    insecure-skip-tls-verify: true\n");
    }
    s.push_str(&format!(
        "users:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\ncurrent-context: {cluster}\n"
    ));
    s
}

/// Writes `text` to `dst` through a temporary file in the same directory and a rename.
fn write_atomic(dst: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = dst.with_file_name(format!(
        ".{}.tmp~",
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("fedns")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dst).map_err(|e| anyhow::anyhow!("{}: {e}", dst.display()))
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

/// The loaded config, refusing TOML (the text edits are YAML's) and a config with no
/// `kubernetes:` section.
fn load(config: &Path) -> anyhow::Result<(String, Config)> {
    anyhow::ensure!(
        config.extension().is_none_or(|e| e != "toml"),
        "{}: join/unjoin edit YAML configs only; add the cluster to kubernetes.clusters by hand",
        config.display()
    );
    let text = std::fs::read_to_string(config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let cfg = Config::parse(config, &text).map_err(|p| problems(config, p))?;
    anyhow::ensure!(
        cfg.kubernetes.is_some(),
        "{}: no `kubernetes:` section; add one (federation, zone) before joining clusters",
        config.display()
    );
    Ok((text, cfg))
}

fn problems(config: &Path, p: Vec<crate::dns::zonefile::Problem>) -> anyhow::Error {
    let lines: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    anyhow::anyhow!(
        "{}: the config is not valid:\n{}",
        config.display(),
        lines.join("\n")
    )
}

/// Validates `text` as the config at `config` and puts it in place by rename.
fn replace_config(config: &Path, text: &str) -> anyhow::Result<()> {
    Config::parse(config, text).map_err(|p| problems(config, p))?;
    write_atomic(config, text, mode_of(config))
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

async fn client(path: &Path, kc: Kubeconfig, context: &str) -> anyhow::Result<kube::Client> {
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| anyhow::anyhow!("{}: context {context:?}: {e}", path.display()))?;
    Ok(kube::Client::try_from(cfg)?)
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Creates `obj`, or (when it exists and `update`) replaces it; prints what it did.
async fn apply<K>(api: &Api<K>, what: &str, obj: &K, update: bool) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let pp = PostParams::default();
    match api.create(&pp, obj).await {
        Ok(_) => say!("created {what}"),
        Err(e) if code(&e) == Some(409) => {
            if update {
                api.replace(&name, &pp, obj)
                    .await
                    .map_err(|e| anyhow::anyhow!("{what}: update: {e}"))?;
                say!("updated {what}");
            } else {
                say!("kept {what} (exists)");
            }
        }
        Err(e) => anyhow::bail!("{what}: create: {e}"),
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, what: &str, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => say!("deleted {what}"),
        Err(e) if code(&e) == Some(404) => say!("{what}: already gone"),
        Err(e) => anyhow::bail!("{what}: delete: {e}"),
    }
    Ok(())
}

/// The objects join applies, as one YAML stream (`---` before each document).
fn manifests(o: &Objects) -> anyhow::Result<String> {
    let docs = [
        serde_saphyr::to_string(&o.namespace),
        serde_saphyr::to_string(&o.account),
        serde_saphyr::to_string(&o.role),
        serde_saphyr::to_string(&o.binding),
        serde_saphyr::to_string(&o.secret),
    ];
    let mut out = String::new();
    for d in docs {
        let d = d.map_err(|e| anyhow::anyhow!("manifests as YAML: {e}"))?;
        out.push_str("---\n");
        out.push_str(d.trim_end());
        out.push('\n');
    }
    Ok(out.trim_end().to_string())
}

/// The patch that adds `key` (the member kubeconfig `kubeconfig`) to [`HUB_SECRET`]: a Secret
/// with only that `data` key, which a strategic-merge (or JSON merge) patch merges into the
/// Secret's `data`, so the other members' keys stay.
fn secret_patch(key: &str, kubeconfig: &str) -> anyhow::Result<String> {
    let (ns, name) = HUB_SECRET;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    let body =
        serde_saphyr::to_string(&secret).map_err(|e| anyhow::anyhow!("patch as YAML: {e}"))?;
    Ok(format!(
        "# Written by `fedns join {key}`: adds the key {key:?} (fedns's read-only kubeconfig for\n\
         # {key}) to the Secret {ns}/{name}, keeping its other keys. It holds a token. Apply with\n\
         #   kubectl -n {ns} patch secret {name} --patch-file THIS_FILE\n{}\n",
        body.trim_end()
    ))
}

/// The patch that removes `key` from [`HUB_SECRET`] (a `null` value deletes a map key in a
/// strategic-merge or JSON merge patch).
fn secret_unpatch(key: &str) -> String {
    let (ns, name) = HUB_SECRET;
    format!(
        "# Written by `fedns unjoin`: removes the key {key:?} from the Secret {ns}/{name},\n\
         # keeping its other keys. Apply with\n\
         #   kubectl -n {ns} patch secret {name} --patch-file THIS_FILE\n\
         data:\n  {key}: null\n"
    )
}

/// Writes `text` (which holds a token: mode 0600) to `path`, or prints it for `-`.
fn write_manifest(path: &Path, text: &str) -> anyhow::Result<()> {
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    write_atomic(path, text, 0o600)?;
    say!("wrote {}", path.display());
    Ok(())
}

pub fn join(a: &JoinArgs) -> anyhow::Result<()> {
    plain_name("cluster name", &a.cluster)?;
    if let Some(r) = &a.region {
        plain_name("region", r)?;
    }
    for z in &a.zones {
        plain_name("zone", z)?;
    }
    plain_name("namespace", &a.namespace)?;
    let (text, cfg) = load(&a.config)?;
    let k = cfg.kubernetes.as_ref().expect("checked by load");
    anyhow::ensure!(
        !k.clusters.iter().any(|c| c.name == a.cluster),
        "{}: cluster {:?} is already in kubernetes.clusters; `fedns unjoin {}` first to join it again",
        a.config.display(),
        a.cluster,
        a.cluster
    );
    let dir = a.config.parent().unwrap_or(Path::new("")).to_path_buf();
    let rel = match &a.output {
        Output::File => format!("kubeconfigs/{}.yaml", a.cluster),
        Output::SecretPatch { mounted_at, .. } => {
            let at = mounted_at.join(&a.cluster);
            at.to_str()
                .filter(|p| {
                    p.chars()
                        .all(|c| !c.is_whitespace() && !",{}[]#'\"".contains(c))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!("{}: not a path a config line can hold", at.display())
                })?
                .to_string()
        }
    };
    let kc_path = dir.join(&rel);
    let mut line = format!("{{name: {}, kubeconfig: {rel}", a.cluster);
    if let Some(r) = &a.region {
        line.push_str(&format!(", region: {r}"));
    }
    if !a.zones.is_empty() {
        line.push_str(&format!(", zones: [{}]", a.zones.join(", ")));
    }
    line.push('}');
    let (new_text, added) = add_cluster_line(&text, &line)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    // Validated now (with a placeholder kubeconfig path that need not exist yet), so a bad
    // region or zone fails before the member cluster is touched.
    let parsed = Config::parse(&a.config, &new_text).map_err(|p| problems(&a.config, p))?;
    // The sources the new cluster will have (the section's defaults) decide its RBAC.
    let optional = parsed
        .kubernetes
        .iter()
        .flat_map(|k| &k.clusters)
        .find(|c| c.name == a.cluster)
        .map_or((false, false, false), |c| {
            (c.dns_endpoints, c.gateway_api, c.service_imports)
        });
    let names = Names::new(&a.namespace, &k.federation);
    let objs = objects(&names, optional);
    let (admin_path, admin) = admin_kubeconfig(a.kubeconfig.as_deref())?;
    let ep = endpoint(&admin_path, &admin, &a.context)?;
    if a.dry_run {
        // The output is itself a YAML stream (what it says is in comments), so it can be
        // reviewed and fed to `kubectl apply -f -` as is.
        println!(
            "# would apply in context {:?} ({}), creating or updating:",
            a.context, ep.server
        );
        println!("{}", manifests(&objs)?);
        let target = match &a.output {
            Output::File => format!("{} (mode 0600)", kc_path.display()),
            Output::SecretPatch { manifest, .. } => format!(
                "{}: a patch adding key {} to Secret {}/{} (mounted as {rel})",
                if manifest == Path::new("-") {
                    "to stdout".into()
                } else {
                    manifest.display().to_string()
                },
                a.cluster,
                HUB_SECRET.0,
                HUB_SECRET.1
            ),
        };
        println!(
            "# would write {target}: server {}, token of Secret {}/{}",
            ep.server, names.namespace, names.secret
        );
        println!("# would change {}:", a.config.display());
        println!("# +{added}");
        return Ok(());
    }
    PROGRESS_TO_STDERR.store(
        matches!(&a.output, Output::SecretPatch { manifest, .. } if manifest == Path::new("-")),
        std::sync::atomic::Ordering::Relaxed,
    );
    let written = match &a.output {
        Output::File => &kc_path,
        Output::SecretPatch { manifest, .. } => manifest,
    };
    if written != Path::new("-") && written.exists() {
        anyhow::bail!(
            "{}: exists already (left from an earlier join?); remove it first",
            written.display()
        );
    }
    let token = block_on(async {
        let client = client(&admin_path, admin, &a.context).await?;
        let ns = names.namespace.as_str();
        apply(
            &Api::<Namespace>::all(client.clone()),
            &format!("Namespace {ns}"),
            &objs.namespace,
            false,
        )
        .await?;
        apply(
            &Api::<ServiceAccount>::namespaced(client.clone(), ns),
            &format!("ServiceAccount {ns}/{}", names.account),
            &objs.account,
            false,
        )
        .await?;
        apply(
            &Api::<ClusterRole>::all(client.clone()),
            &format!("ClusterRole {}", names.account),
            &objs.role,
            true,
        )
        .await?;
        apply(
            &Api::<ClusterRoleBinding>::all(client.clone()),
            &format!("ClusterRoleBinding {}", names.account),
            &objs.binding,
            true,
        )
        .await?;
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        let what = format!("Secret {ns}/{}", names.secret);
        apply(&secrets, &what, &objs.secret, false).await?;
        wait_token(&secrets, &what, &names.secret).await
    })??;
    let member = member_kubeconfig(&a.cluster, &names.account, &ep, &token);
    match &a.output {
        Output::File => {
            std::fs::create_dir_all(dir.join("kubeconfigs"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("kubeconfigs").display()))?;
            write_atomic(&kc_path, &member, 0o600)?;
            say!("wrote {}", kc_path.display());
            if let Err(e) = replace_config(&a.config, &new_text) {
                // No config names it: leaving it would only block the next join.
                let _ = std::fs::remove_file(&kc_path);
                return Err(e);
            }
        }
        Output::SecretPatch { manifest, .. } => {
            // The config first: a patch printed for a config that refused the line would
            // give the hub a key no cluster reads.
            replace_config(&a.config, &new_text)?;
            write_manifest(manifest, &secret_patch(&a.cluster, &member)?)?;
        }
    }
    say!("added to {}: {added}", a.config.display());
    Ok(())
}

/// Waits until the token controller has put a token in the Secret.
async fn wait_token(api: &Api<Secret>, what: &str, name: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        let s = api
            .get(name)
            .await
            .map_err(|e| anyhow::anyhow!("{what}: read: {e}"))?;
        let token = s
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .map(|ByteString(b)| String::from_utf8_lossy(b).trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = token {
            return Ok(t);
        }
        anyhow::ensure!(
            start.elapsed() < TOKEN_WAIT,
            "{what}: no token after {} s (is the token controller running?)",
            TOKEN_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn unjoin(a: &UnjoinArgs) -> anyhow::Result<()> {
    let (text, cfg) = load(&a.config)?;
    let k = cfg.kubernetes.as_ref().expect("checked by load");
    let spec = k
        .clusters
        .iter()
        .find(|c| c.name == a.cluster)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no cluster {:?} in kubernetes.clusters",
                a.config.display(),
                a.cluster
            )
        })?;
    let (new_text, removed) = remove_cluster(&text, &a.cluster)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    Config::parse(&a.config, &new_text).map_err(|p| problems(&a.config, p))?;
    // Only a kubeconfig join wrote (under kubeconfigs/ beside the config) is deleted.
    let dir = a
        .config
        .parent()
        .unwrap_or(Path::new(""))
        .join("kubeconfigs");
    let owned = match &spec.access {
        Access::Kubeconfig { path, .. } => {
            let ours = path
                .parent()
                .and_then(|p| p.canonicalize().ok())
                .zip(dir.canonicalize().ok())
                .is_some_and(|(p, d)| p == d);
            ours.then(|| path.clone())
        }
        Access::InCluster => None,
    };
    let names = Names::new(&a.namespace, &k.federation);
    // The Secret key is the file name the cluster's kubeconfig is mounted as.
    let key = match &spec.access {
        Access::Kubeconfig { path, .. } => path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&a.cluster)
            .to_string(),
        Access::InCluster => a.cluster.clone(),
    };
    if a.dry_run {
        println!("would change {}:", a.config.display());
        for l in &removed {
            println!("-{l}");
        }
        if let Some(p) = &owned {
            println!("would delete {}", p.display());
        }
        if let Some(m) = &a.secret_manifest {
            println!(
                "would write {}: a patch removing key {key} from Secret {}/{}",
                m.display(),
                HUB_SECRET.0,
                HUB_SECRET.1
            );
        }
        if let Some(ctx) = &a.context {
            println!("would delete in context {ctx:?}:");
            println!("  ClusterRoleBinding {}", names.account);
            println!("  ClusterRole {}", names.account);
            println!("  Secret {}/{}", names.namespace, names.secret);
            println!("  ServiceAccount {}/{}", names.namespace, names.account);
        }
        return Ok(());
    }
    PROGRESS_TO_STDERR.store(
        a.secret_manifest.as_deref() == Some(Path::new("-")),
        std::sync::atomic::Ordering::Relaxed,
    );
    replace_config(&a.config, &new_text)?;
    say!("removed from {}:", a.config.display());
    for l in &removed {
        say!("-{l}");
    }
    if let Some(m) = &a.secret_manifest {
        write_manifest(m, &secret_unpatch(&key))?;
    }
    if let Some(p) = &owned {
        match std::fs::remove_file(p) {
            Ok(()) => say!("deleted {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("{}: {e}", p.display()),
        }
    }
    if let Some(ctx) = &a.context {
        let (admin_path, admin) = admin_kubeconfig(a.kubeconfig.as_deref())?;
        block_on(async {
            let client = client(&admin_path, admin, ctx).await?;
            let ns = names.namespace.as_str();
            let n = &names.account;
            delete(
                &Api::<ClusterRoleBinding>::all(client.clone()),
                &format!("ClusterRoleBinding {n}"),
                n,
            )
            .await?;
            delete(
                &Api::<ClusterRole>::all(client.clone()),
                &format!("ClusterRole {n}"),
                n,
            )
            .await?;
            delete(
                &Api::<Secret>::namespaced(client.clone(), ns),
                &format!("Secret {ns}/{}", names.secret),
                &names.secret,
            )
            .await?;
            delete(
                &Api::<ServiceAccount>::namespaced(client, ns),
                &format!("ServiceAccount {ns}/{n}"),
                n,
            )
            .await
        })??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Text edits of the YAML config
// ---------------------------------------------------------------------------------------------

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Where `kubernetes.clusters` is in the text, by line index.
struct Section {
    /// The `clusters:` key's line and indent, if the section has one.
    key: Option<(usize, usize)>,
    /// The indent of the section's keys.
    child: usize,
    /// The line after the section.
    end: usize,
}

/// The `clusters:` key of the top-level `kubernetes:` section.
fn find_clusters(lines: &[&str]) -> Result<Section, String> {
    let start = lines
        .iter()
        .position(|l| {
            l.strip_prefix("kubernetes:")
                .is_some_and(is_blank_or_comment)
        })
        .ok_or("no `kubernetes:` section (a block mapping at the top level) to add clusters to")?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| !is_blank_or_comment(l) && indent(l) == 0)
        .map_or(lines.len(), |p| start + 1 + p);
    let child = lines[start + 1..end]
        .iter()
        .find(|l| !is_blank_or_comment(l))
        .map_or(2, |l| indent(l));
    let key = (start + 1..end).find(|&i| {
        let l = lines[i];
        indent(l) == child && l.trim_start().starts_with("clusters:")
    });
    if let Some(i) = key {
        let rest = lines[i].trim_start()["clusters:".len()..].trim();
        if !rest.is_empty() && !rest.starts_with('#') {
            return Err(format!(
                "line {}: kubernetes.clusters is written inline ({rest}); write it as a block list (one `- ...` line per cluster) to let join edit it",
                i + 1
            ));
        }
    }
    Ok(Section {
        key: key.map(|i| (i, child)),
        child,
        end,
    })
}

/// The end (exclusive, after its last non-blank line) of the block list under the key at
/// `key` with indent `key_indent`, and the indent of its items.
fn list_end(lines: &[&str], key: usize, key_indent: usize, section_end: usize) -> (usize, usize) {
    let mut last = key + 1;
    let mut item_indent = None;
    for (i, l) in lines.iter().enumerate().take(section_end).skip(key + 1) {
        if is_blank_or_comment(l) {
            continue;
        }
        let ind = indent(l);
        let is_item = l.trim_start().starts_with('-');
        if ind > key_indent || (ind == key_indent && is_item) {
            if is_item && item_indent.is_none() {
                item_indent = Some(ind);
            }
            last = i + 1;
        } else {
            break;
        }
    }
    (last, item_indent.unwrap_or(key_indent + 2))
}

/// Adds `- ITEM` as the last entry of `kubernetes.clusters`, keeping every other line; returns
/// the new text and the added line.
pub fn add_cluster_line(text: &str, item: &str) -> Result<(String, String), String> {
    let lines: Vec<&str> = text.lines().collect();
    let Section { key, child, end } = find_clusters(&lines)?;
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let added;
    match key {
        Some((k, key_indent)) => {
            let (at, item_indent) = list_end(&lines, k, key_indent, end);
            added = format!("{}- {item}", " ".repeat(item_indent));
            out.insert(at, added.clone());
        }
        None => {
            // After the section's last non-blank line.
            let at = (0..end)
                .rev()
                .find(|&i| !lines[i].trim().is_empty())
                .map_or(end, |i| i + 1);
            added = format!("{}- {item}", " ".repeat(child + 2));
            out.insert(at, format!("{}clusters:", " ".repeat(child)));
            out.insert(at + 1, added.clone());
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    Ok((s, added))
}

/// The value of `name:` in one list item's text (flow `- {name: x, ...}` or block
/// `- name: x` / a later `name: x` line).
fn item_name(item: &[&str]) -> Option<String> {
    for l in item {
        let t = l.trim_start().trim_start_matches('-').trim_start();
        let t = t.trim_start_matches('{').trim_start();
        // Flow items: `name` may follow other keys.
        for part in t.split([',', '{', '}']) {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("name:") {
                let v = v.split('#').next().unwrap_or("").trim();
                return Some(v.trim_matches(['"', '\'']).to_string());
            }
        }
    }
    None
}

/// Removes the `kubernetes.clusters` item named `name` (all its lines); returns the new text
/// and the removed lines.
pub fn remove_cluster(text: &str, name: &str) -> Result<(String, Vec<String>), String> {
    let lines: Vec<&str> = text.lines().collect();
    let Section { key, end, .. } = find_clusters(&lines)?;
    let (k, key_indent) = key.ok_or("kubernetes has no `clusters:` list")?;
    let (list_end, item_indent) = list_end(&lines, k, key_indent, end);
    let starts: Vec<usize> = (k + 1..list_end)
        .filter(|&i| indent(lines[i]) == item_indent && lines[i].trim_start().starts_with('-'))
        .collect();
    for (n, &s) in starts.iter().enumerate() {
        let e = starts.get(n + 1).copied().unwrap_or(list_end);
        // An item's own lines: up to the next item, leaving trailing comments in place.
        let e = (s + 1..e)
            .rev()
            .find(|&i| !is_blank_or_comment(lines[i]))
            .map_or(s + 1, |i| i + 1);
        if item_name(&lines[s..e]).as_deref() == Some(name) {
            let removed = lines[s..e].iter().map(|l| l.to_string()).collect();
            let mut out: Vec<&str> = lines[..s].to_vec();
            out.extend_from_slice(&lines[e..]);
            let mut t = out.join("\n");
            t.push('\n');
            return Ok((t, removed));
        }
    }
    Err(format!("no item named {name:?} in kubernetes.clusters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "# top\nlisten: [\"127.0.0.1:0\"]\nkubernetes:\n  federation: f   # fed\n  zone: example.com\n  clusters:\n    # the first\n    - {name: a, kubeconfig: kc/a}\n    - name: b\n      kubeconfig: kc/b\n\n    # trailing comment\nhttp: \"127.0.0.1:0\"\n";

    #[test]
    fn add_appends_after_the_last_item_keeping_comments() {
        let (t, added) =
            add_cluster_line(CFG, "{name: c, kubeconfig: kubeconfigs/c.yaml}").unwrap();
        assert_eq!(added, "    - {name: c, kubeconfig: kubeconfigs/c.yaml}");
        assert!(t.contains("      kubeconfig: kc/b\n    - {name: c, kubeconfig: kubeconfigs/c.yaml}\n\n    # trailing comment\nhttp:"), "{t}");
        assert!(t.starts_with("# top\n") && t.contains("federation: f   # fed\n"));
    }

    #[test]
    fn add_handles_items_at_the_key_indent_and_a_missing_list() {
        let t = "kubernetes:\n  zone: z\n  clusters:\n  - {name: a, in_cluster: true}\nother: 1\n";
        let (t2, added) = add_cluster_line(t, "{name: b}").unwrap();
        assert_eq!(added, "  - {name: b}");
        assert_eq!(
            t2,
            "kubernetes:\n  zone: z\n  clusters:\n  - {name: a, in_cluster: true}\n  - {name: b}\nother: 1\n"
        );
        let (t3, _) = add_cluster_line("kubernetes:\n  zone: z\n\nx: 1\n", "{name: b}").unwrap();
        assert_eq!(
            t3,
            "kubernetes:\n  zone: z\n  clusters:\n    - {name: b}\n\nx: 1\n"
        );
        assert!(
            add_cluster_line("zones_dir: z\n", "{name: b}")
                .unwrap_err()
                .contains("no `kubernetes:` section")
        );
        assert!(
            add_cluster_line("kubernetes:\n  clusters: []\n", "{name: b}")
                .unwrap_err()
                .contains("inline")
        );
    }

    #[test]
    fn remove_takes_flow_and_block_items() {
        let (t, removed) = remove_cluster(CFG, "b").unwrap();
        assert_eq!(removed, ["    - name: b", "      kubeconfig: kc/b"]);
        assert!(
            t.contains("    - {name: a, kubeconfig: kc/a}\n\n    # trailing comment\n"),
            "{t}"
        );
        let (t, removed) = remove_cluster(CFG, "a").unwrap();
        assert_eq!(removed, ["    - {name: a, kubeconfig: kc/a}"]);
        assert!(t.contains("    # the first\n    - name: b\n"), "{t}");
        assert!(remove_cluster(CFG, "zz").is_err());
        let (t, _) = remove_cluster(
            "kubernetes:\n  clusters:\n    - {kubeconfig: k, name: \"q\"}\n    - {name: r}\n",
            "q",
        )
        .unwrap();
        assert_eq!(t, "kubernetes:\n  clusters:\n    - {name: r}\n");
    }

    #[test]
    fn rules_follow_the_enabled_sources() {
        let groups = |r: Vec<PolicyRule>| -> Vec<String> {
            r.into_iter()
                .flat_map(|r| r.api_groups.unwrap_or_default())
                .collect()
        };
        assert_eq!(
            groups(rules((false, false, false))),
            ["", "discovery.k8s.io", "networking.k8s.io"]
        );
        assert_eq!(
            groups(rules((true, true, true))),
            [
                "",
                "discovery.k8s.io",
                "networking.k8s.io",
                "externaldns.k8s.io",
                "gateway.networking.k8s.io",
                "multicluster.x-k8s.io"
            ]
        );
        assert!(plain_name("cluster name", "west-1").is_ok());
        assert!(plain_name("cluster name", "a b").is_err());
        assert!(plain_name("cluster name", "a}").is_err());
    }
}

//! deploy/kubernetes as a platform team installs it: every kustomization (base, overlays/hub,
//! overlays/member, overlays/monitoring) rendered by the real `kubectl kustomize`, every rendered
//! object validated against the Kubernetes OpenAPI schemas (`kubernetes-validate --strict`, the
//! oldest and newest versions it ships), the objects checked against each other and against
//! fedns (selectors, ports, the drain, the embedded config parsed by fedns), the PrometheusRule
//! checked and unit-tested with `promtool`, and every metric that the alerts and the Grafana
//! dashboard name checked against a scrape of a running fedns.
//!
//! kubectl, kubernetes-validate and promtool come from scripts/test; without them a test is
//! skipped, unless `CI=true`, where that is a failure.

mod common;
mod kube_api;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Fedns, http_get, wait_for};
use kube_api::{ApiServer, Res, kubeconfig, node, service, slice};
use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const OVERLAYS: [&str; 5] = [
    "base",
    "overlays/hub",
    "overlays/member",
    "overlays/member-crds",
    "overlays/monitoring",
];

/// `name` on PATH; `None` (the test is skipped) outside CI, a failure with CI=true.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {name} is required (scripts/test installs it)"
        );
        eprintln!("skipped: no {name} (scripts/test installs it)");
    }
    found
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kubectl kustomize deploy/kubernetes/DIR`: the rendered text and its objects.
fn render(kubectl: &Path, dir: &str) -> (String, Vec<Value>) {
    let path = Path::new(REPO).join("deploy/kubernetes").join(dir);
    let (ok, text) = run(Command::new(kubectl).arg("kustomize").arg(&path));
    assert!(ok, "kubectl kustomize {dir}:\n{text}");
    let docs = text
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{dir}: {e}\n{d}")))
        .collect();
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// `group/resource` of every rule of a ClusterRole, each rule granting exactly get/list/watch.
fn granted(role: &Value) -> BTreeSet<String> {
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let verbs: BTreeSet<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{rule}");
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                granted.insert(format!("{}/{}", g.as_str().unwrap(), r.as_str().unwrap()));
            }
        }
    }
    granted
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// `selector` (a map of labels) selects an object with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("selector map");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == *v)
}

/// Every kustomization renders, and every object validates against the Kubernetes schemas;
/// only the Prometheus Operator's kinds have no schema there (promtool checks the rules).
#[test]
fn kustomizations_render_and_validate_against_the_openapi_schemas() {
    let (Some(kubectl), Some(validate)) = (tool("kubectl"), tool("kubernetes-validate")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let (text, docs) = render(&kubectl, overlay);
        assert!(!docs.is_empty(), "{overlay} renders nothing");
        let file = dir
            .path()
            .join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, &text).unwrap();
        for version in ["1.25.0", "1.37.0"] {
            let (ok, out) = run(Command::new(&validate)
                .args(["--strict", "-k", version])
                .arg(&file));
            assert!(ok, "{overlay} against Kubernetes {version}:\n{out}");
            let passed = out
                .lines()
                .filter(|l| l.contains(" passed for resource "))
                .count();
            let unknown: BTreeSet<&str> = out
                .lines()
                .filter_map(|l| l.split("Couldn't find schema for kind ").nth(1))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            assert!(
                unknown
                    .iter()
                    .all(|k| ["ServiceMonitor", "PrometheusRule"].contains(k)),
                "{overlay}: no schema for {unknown:?}"
            );
            assert_eq!(
                passed + unknown.len(),
                docs.len(),
                "{overlay} {version}:\n{out}"
            );
        }
    }
}

/// What the objects promise each other and fedns: the Services and the PDB select the pods,
/// their target ports exist, the drain fits the grace period, the config in the ConfigMap is one
/// fedns accepts, the hardening is there; the member overlay is RBAC only, and grants exactly
/// get/list/watch on the four resources fedns reads.
#[test]
fn rendered_objects_fit_together_and_fit_fedns() {
    let Some(kubectl) = tool("kubectl") else {
        return;
    };
    for overlay in ["base", "overlays/hub", "overlays/monitoring"] {
        let (_, docs) = render(&kubectl, overlay);
        let deploy = find(&docs, "Deployment", "fedns");
        let pod = &deploy["spec"]["template"];
        let labels = &pod["metadata"]["labels"];
        let spec = &pod["spec"];
        let c = &spec["containers"][0];
        assert!(
            deploy["spec"]["replicas"].as_u64().unwrap() >= 2,
            "{overlay}"
        );
        assert!(selects(&deploy["spec"]["selector"]["matchLabels"], labels));
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert!(c["resources"]["requests"]["cpu"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert!(
            c["image"].as_str().unwrap().contains("fedns:"),
            "{}",
            c["image"]
        );
        let spread: Vec<&str> = spec["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                assert!(selects(&t["labelSelector"]["matchLabels"], labels));
                t["topologyKey"].as_str().unwrap()
            })
            .collect();
        assert!(
            spread.contains(&"topology.kubernetes.io/zone"),
            "{spread:?}"
        );
        let ports: Vec<(&str, u64, &str)> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_u64().unwrap(),
                    p["protocol"].as_str().unwrap(),
                )
            })
            .collect();

        // The config fedns reads is the ConfigMap's, and fedns accepts it; the pod's grace
        // period covers the drain it configures.
        let cm = find(&docs, "ConfigMap", "fedns-config");
        let text = cm["data"]["fedns.yaml"].as_str().unwrap();
        let cfg = fedns::config::Config::parse(Path::new("/etc/fedns/fedns.yaml"), text)
            .unwrap_or_else(|e| panic!("{overlay}: embedded fedns.yaml: {e:?}"));
        let grace = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap());
        assert!(
            grace > cfg.lameduck + cfg.tcp_idle_timeout,
            "{overlay}: {grace:?}"
        );
        let k = cfg.kubernetes.as_ref().expect("a kubernetes section");
        for v in spec["volumes"].as_array().unwrap() {
            if v["configMap"]["name"] == "fedns-config" {
                for item in v["configMap"]["items"].as_array().unwrap() {
                    assert!(
                        cm["data"][item["key"].as_str().unwrap()].is_string(),
                        "{item}"
                    );
                }
            }
        }
        let in_cluster = text.contains("in_cluster: true");
        assert_eq!(
            in_cluster,
            overlay != "base",
            "{overlay}: {:?}",
            k.clusters.len()
        );
        if in_cluster {
            assert_eq!(spec["automountServiceAccountToken"], true, "{overlay}");
            let crb = find(&docs, "ClusterRoleBinding", "fedns-in-cluster");
            assert_eq!(crb["subjects"][0]["name"], spec["serviceAccountName"]);
            assert_eq!(
                crb["subjects"][0]["namespace"],
                deploy["metadata"]["namespace"]
            );
            find(
                &docs,
                "ClusterRole",
                crb["roleRef"]["name"].as_str().unwrap(),
            );
        } else {
            assert_eq!(spec["automountServiceAccountToken"], false);
        }

        // Services: select the pods, target named container ports with their protocol.
        let mut services = 0;
        for svc in docs.iter().filter(|d| d["kind"] == "Service") {
            services += 1;
            assert!(selects(&svc["spec"]["selector"], labels), "{svc}");
            for p in svc["spec"]["ports"].as_array().unwrap() {
                let target = p["targetPort"].as_str().unwrap();
                assert!(
                    ports
                        .iter()
                        .any(|(n, _, proto)| *n == target && *proto == p["protocol"]),
                    "{}: no container port {target}",
                    svc["metadata"]["name"]
                );
            }
            if svc["spec"]["type"] == "LoadBalancer" {
                assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local", "{svc}");
            }
        }
        assert_eq!(services, 3, "{overlay}: dns-udp, dns-tcp, metrics");
        find(&docs, "Service", "fedns-metrics");
        let pdb = find(&docs, "PodDisruptionBudget", "fedns");
        assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
        let np = find(&docs, "NetworkPolicy", "fedns");
        assert!(selects(&np["spec"]["podSelector"]["matchLabels"], labels));
        let allowed: BTreeSet<(u64, &str)> = np["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().unwrap())
            .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap()))
            .collect();
        for (_, port, proto) in &ports {
            assert!(
                allowed.contains(&(*port, *proto)),
                "{overlay}: {port}/{proto} not let in"
            );
        }
    }

    // A member gets RBAC and nothing else.
    let (_, docs) = render(&kubectl, "overlays/member");
    assert_eq!(
        kinds(&docs),
        BTreeSet::from([
            "ClusterRole/fedns-reader".to_string(),
            "ClusterRoleBinding/fedns-reader".to_string(),
            "Secret/fedns-reader-token".to_string(),
            "ServiceAccount/fedns-reader".to_string(),
        ])
    );
    let base = [
        "/services",
        "/nodes",
        "discovery.k8s.io/endpointslices",
        "networking.k8s.io/ingresses",
    ];
    assert_eq!(
        granted(find(&docs, "ClusterRole", "fedns-reader")),
        BTreeSet::from(base.map(String::from))
    );
    // With the optional sources' components: exactly their kinds more.
    let (_, docs) = render(&kubectl, "overlays/member-crds");
    let mut want = BTreeSet::from(base.map(String::from));
    want.extend(
        [
            "externaldns.k8s.io/dnsendpoints",
            "gateway.networking.k8s.io/gateways",
            "gateway.networking.k8s.io/httproutes",
            "multicluster.x-k8s.io/serviceimports",
        ]
        .map(String::from),
    );
    assert_eq!(granted(find(&docs, "ClusterRole", "fedns-reader")), want);

    // Monitoring: the ServiceMonitor scrapes the metrics Service's port; the dashboard's
    // ConfigMap is the JSON file.
    let (_, docs) = render(&kubectl, "overlays/monitoring");
    let sm = find(&docs, "ServiceMonitor", "fedns");
    let metrics = find(&docs, "Service", "fedns-metrics");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &metrics["metadata"]["labels"]
    ));
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"][0],
        metrics["metadata"]["namespace"]
    );
    let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        metrics["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port)
    );
    let dash = find(&docs, "ConfigMap", "fedns-grafana-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let file = std::fs::read_to_string(Path::new(REPO).join(DASHBOARD)).unwrap();
    assert_eq!(dash["data"]["fedns.json"].as_str().unwrap(), file);
}

const DASHBOARD: &str = "deploy/kubernetes/overlays/monitoring/grafana-dashboard.json";
const RULE: &str = "deploy/kubernetes/overlays/monitoring/prometheusrule.yaml";

fn rule_groups() -> Value {
    let text = std::fs::read_to_string(Path::new(REPO).join(RULE)).unwrap();
    let v: Value = serde_saphyr::from_str(&text).unwrap();
    v["spec"]["groups"].clone()
}

/// The alerts are valid Prometheus rules, and each fires on the series it is for, after its
/// `for:`, with the labels it should carry (alerts-test.yaml).
#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut groups = rule_groups();
    let full = dir.path().join("full.yaml");
    std::fs::write(&full, json!({"groups": groups}).to_string()).unwrap();
    let (ok, out) = run(Command::new(&promtool).args(["check", "rules"]).arg(&full));
    assert!(ok && out.contains("SUCCESS: 6 rules found"), "{out}");
    // Unit tests compare annotations too; the templates were checked above.
    for g in groups.as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("fedns-rules.yaml"),
        json!({"groups": groups}).to_string(),
    )
    .unwrap();
    let tests = dir.path().join("alerts-test.yaml");
    std::fs::copy(
        Path::new(REPO).join("deploy/kubernetes/overlays/monitoring/alerts-test.yaml"),
        &tests,
    )
    .unwrap();
    let (ok, out) = run(Command::new(&promtool).args(["test", "rules"]).arg(&tests));
    assert!(ok, "{out}");
}

/// PromQL words that are not metric names.
const PROMQL: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "changes",
    "histogram_quantile",
    "time",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "label_values",
    "bool",
    "offset",
];

/// The metric names an expression reads: identifiers outside label matchers, ranges, strings
/// and grouping clauses that are not PromQL words; `$variables` are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut grouping = false; // inside by (...), on (...), ...
    while i < b.len() {
        let c = b[i];
        if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += 1;
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < b.len() && b[i] != close {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
        } else if c == ')' {
            grouping = false;
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str())
            {
                grouping = true;
            } else if !grouping && !PROMQL.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (le, protocol) (rate(fedns_x_bucket{job=~"$job"}[$__rate_interval])) / on (instance) fedns_y > 0.5"#
        ),
        vec!["fedns_x_bucket", "fedns_y"]
    );
    assert_eq!(
        metric_names(r#"label_values(fedns_build_info{job=~"$job"}, instance)"#),
        vec!["fedns_build_info", "instance"]
    );
}

/// Every expression of the dashboard and every alert names only metrics a running fedns
/// exports (one watching a test Kubernetes API server, with probes, after a query), and the
/// dashboard covers what the issue asks of it.
#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let api = ApiServer::start();
    api.put(Res::Nodes, node("n1", "us-east1", "us-east1-b", false));
    api.put(
        Res::Services,
        service(
            "shop",
            "checkout",
            json!({"fedns.io/federate": "true"}),
            &["127.0.0.1"],
            &[],
        ),
    );
    api.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-1",
            "checkout",
            &[("10.0.0.1", true, false, None)],
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        kubeconfig(&[("east", api.url())]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fedns.yaml"),
        "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nzones_dir: zones\n\
         kubernetes:\n  federation: myfed\n  zone: example.com\n  coalesce_ms: 20\n  \
         select:\n    label: fedns.io/federate=true\n  clusters:\n    \
         - {name: east, kubeconfig: kubeconfig, context: east}\n\
         probes:\n  - {federation: myfed, type: tcp, port: 9, interval_ms: 500, timeout_ms: 200}\n",
    )
    .unwrap();
    let f = Fedns::start(&dir.path().join("fedns.yaml"));
    wait_for(Duration::from_secs(15), || {
        (http_get(f.http, "/readyz").0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("not ready:\n{}", f.log_text()));
    // One query, so the per-zone query counters have samples.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let q =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x06\x00\x01";
    sock.send_to(q, f.udp).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 512];
    sock.recv_from(&mut buf).expect("an answer");

    let scrape = http_get(f.http, "/metrics").1;
    let mut exported = BTreeSet::new();
    for l in scrape.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            exported.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for s in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{s}"));
                }
            }
        }
    }

    let mut exprs: Vec<(String, String)> = Vec::new();
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(REPO).join(DASHBOARD)).unwrap())
            .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push((
                format!("panel {:?}", p["title"]),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            // label_values(METRIC{...}, LABEL): the label is not a metric.
            let q = v["query"].as_str().unwrap();
            let q = q.rsplit_once(',').map_or(q, |(m, _)| m);
            exprs.push((format!("variable {}", v["name"]), format!("{q})")));
        }
    }
    for g in rule_groups().as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            exprs.push((
                format!("alert {}", r["alert"]),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let mut used = BTreeSet::new();
    for (what, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr}");
        for n in names {
            assert!(
                exported.contains(&n),
                "{what}: {n} is not exported by fedns (expression {expr})\nexported: {exported:?}"
            );
            used.insert(n);
        }
    }
    // What the dashboard is for: QPS by rcode and zone, latency, cluster up, fail static,
    // publish duration, table size, source errors.
    for m in [
        "fedns_responses_total",
        "fedns_request_duration_seconds_bucket",
        "fedns_cluster_up",
        "fedns_kube_fail_static_names",
        "fedns_probe_fail_static_services",
        "fedns_publish_duration_seconds_bucket",
        "fedns_table_names",
        "fedns_source_errors_total",
    ] {
        assert!(used.contains(m), "nothing reads {m}");
    }
    let text = dash.to_string();
    assert!(text.contains("by (rcode)") && text.contains("by (zone)"));
    drop(api);
}

/// The Dockerfile (built only where a Docker engine runs: scripts/build-image) agrees with the
/// Deployment and with fedns: multi-stage, distroless runtime, the user the pod runs as, the
/// ports the pod declares, `fedns` as entrypoint, a stripped binary, and an example config that
/// `fedns check` accepts at the path the build script checks inside the image.
#[test]
fn dockerfile_fits_the_deployment() {
    let text = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(text.contains("ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot"));
    assert!(text.contains("strip --strip-all target/release/fedns"));
    assert!(text.contains("cargo build --release --locked $offline --bin fedns"));
    assert!(
        lines.contains(&r#"ENTRYPOINT ["/usr/local/bin/fedns"]"#),
        "{lines:?}"
    );
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let mut exposed: BTreeSet<(u64, String)> = BTreeSet::new();
    for l in lines.iter().filter_map(|l| l.strip_prefix("EXPOSE ")) {
        for p in l.split_whitespace() {
            let (port, proto) = p.split_once('/').unwrap();
            exposed.insert((port.parse().unwrap(), proto.to_ascii_uppercase()));
        }
    }
    let manifest: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("deploy/kubernetes/base/deployment.yaml"))
            .unwrap(),
    )
    .unwrap();
    let spec = &manifest["spec"]["template"]["spec"];
    let sc = &spec["securityContext"];
    assert_eq!(
        user,
        format!("{}:{}", sc["runAsUser"], sc["runAsGroup"]),
        "image user vs pod"
    );
    let declared: BTreeSet<(u64, String)> = spec["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(exposed, declared);
    // The example the image carries (config/ and zones/ under /usr/share/fedns/example) passes
    // `fedns check`, laid out as in the image.
    assert!(text.contains("cp -r config zones /out/usr/share/fedns/example/"));
    let script = std::fs::read_to_string(Path::new(REPO).join("scripts/build-image")).unwrap();
    assert!(script.contains("check --config /usr/share/fedns/example/config/fedns.yaml"));
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "zones"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(Path::new(REPO).join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let out = Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(dir.path().join("config/fedns.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The `/status` page in a real headless browser (Debian's chromium) against the real `fedns`
//! binary watching two test Kubernetes API servers (`kube_api`): the page loads and shows both
//! clusters in sync with their shards, then one API server stops and the page shows that
//! cluster down with its shards stale, and a screenshot of it is taken
//! (`status-page.png` in the target directory's `tmp/`).
//!
//! chromium is found as `$FEDNS_CHROMIUM`, `chromium` or `chromium-browser`; scripts/test
//! installs it. Without it the test is skipped, unless `CI=true`, where that is a failure.

mod common;
mod kube_api;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fedns, http_get, wait_for};
use kube_api::{ApiServer, Res, kubeconfig, node, service, slice};
use serde_json::json;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 30\n@ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\n";

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FEDNS_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// Runs headless chromium on `url` with `mode` (`--dump-dom` or `--screenshot=FILE`), bounded.
fn browse(bin: &Path, profile: &Path, mode: &str, url: &str) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "chromium {mode} {url}: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {mode} {url}: no result within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

fn member(region: &str, ip: &str) -> ApiServer {
    let api = ApiServer::start();
    api.put(
        Res::Nodes,
        node("n1", region, &format!("{region}-b"), false),
    );
    let labels = json!({"app": "checkout", "fedns.io/federate": "true"});
    api.put(
        Res::Services,
        service("shop", "checkout", labels, &[ip], &[]),
    );
    api.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-1",
            "checkout",
            &[
                ("10.244.1.5", true, false, None),
                ("10.244.1.6", false, false, None),
            ],
        ),
    );
    api
}

/// The `<tr>` of the element whose attribute is `key="value"`, as chromium serialised it.
fn row<'a>(dom: &'a str, key: &str, value: &str) -> &'a str {
    let start = dom
        .find(&format!("{key}=\"{value}\""))
        .unwrap_or_else(|| panic!("no {key}={value} in the page:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[test]
fn status_page_in_a_browser_shows_a_cluster_going_down() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: chromium is required (scripts/test installs it)"
        );
        eprintln!("skipped: no chromium (scripts/test installs it)");
        return;
    };
    let east = member("us-east1", "203.0.113.10");
    let west = member("us-west2", "198.51.100.30");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        kubeconfig(&[("east", east.url()), ("west", west.url())]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fedns.yaml"),
        "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nzones_dir: zones\n\
         kubernetes:\n  federation: myfed\n  zone: example.com\n  stale_grace_secs: 300\n  \
         coalesce_ms: 20\n  select:\n    label: fedns.io/federate=true\n  clusters:\n    \
         - {name: east, kubeconfig: kubeconfig, context: east}\n    \
         - {name: west, kubeconfig: kubeconfig, context: west}\n",
    )
    .unwrap();
    let f = Fedns::start(&dir.path().join("fedns.yaml"));
    wait_for(Duration::from_secs(15), || {
        (http_get(f.http, "/readyz").0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("not ready:\n{}", f.log_text()));
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://{}/status", f.http);

    // Loads, with both clusters in sync and the service's shard in each.
    let dom = browse(&bin, profile.path(), "--dump-dom", &base);
    assert!(dom.contains("<title>fedns status</title>"), "{dom}");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "reloads itself: {dom}"
    );
    let gen_before: u64 = dom
        .split("id=\"generation\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no generation:\n{dom}"));
    assert!(gen_before > 0);
    for (cluster, region) in [("east", "us-east1"), ("west", "us-west2")] {
        let r = row(&dom, "data-cluster", cluster);
        assert!(r.contains("data-sync=\"in-sync\""), "{r}");
        assert!(r.contains(region), "{r}");
        assert!(r.contains(&format!("{region}-b")), "zones: {r}");
    }
    let r = row(&dom, "data-service", "shop/checkout");
    assert!(
        r.contains("203.0.113.10") && r.contains("198.51.100.30"),
        "{r}"
    );
    assert!(r.contains("1/2 ready"), "{r}");
    assert!(
        r.contains("/explain?name=checkout.shop.myfed.svc.us-west2.example.com."),
        "{r}"
    );
    assert!(!r.contains("stale"), "{r}");

    // The filter form narrows the grid (a real GET through the page's own parameters).
    let dom = browse(
        &bin,
        profile.path(),
        "--dump-dom",
        &format!("{base}?q=nothing-like-this&refresh=0"),
    );
    assert!(dom.contains("0 of 1 services"), "{dom}");
    assert!(!dom.contains("data-service="), "{dom}");
    assert!(!dom.contains("http-equiv=\"refresh\""), "refresh=0: {dom}");

    // west's API server stops: the page shows it down, its shard stale (still served).
    drop(west);
    wait_for(Duration::from_secs(20), || {
        let html = http_get(f.http, "/status?refresh=0").1;
        row(&html, "data-cluster", "west")
            .contains("data-sync=down")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "west never shown down:\n{}\n{}",
            http_get(f.http, "/status?refresh=0").1,
            f.log_text()
        )
    });
    let dom = browse(&bin, profile.path(), "--dump-dom", &base);
    let r = row(&dom, "data-cluster", "west");
    assert!(r.contains("data-sync=\"down\""), "{r}");
    assert!(r.contains("cluster west:"), "last error: {r}");
    assert!(
        row(&dom, "data-cluster", "east").contains("data-sync=\"in-sync\""),
        "{dom}"
    );
    let r = row(&dom, "data-service", "shop/checkout");
    assert!(r.contains("stale: cluster down"), "{r}");
    let dom = browse(
        &bin,
        profile.path(),
        "--dump-dom",
        &format!("{base}?show=static"),
    );
    assert!(dom.contains("1 of 1 services"), "fail-static filter: {dom}");

    // And a screenshot of it.
    // CARGO_TARGET_TMPDIR exists whatever the target directory is (a clean clone has no
    // target/ of its own when CARGO_TARGET_DIR points elsewhere).
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &bin,
        profile.path(),
        &format!("--screenshot={}", shot.display()),
        &base,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "screenshot only {} bytes", png.len());
    drop(east);
}

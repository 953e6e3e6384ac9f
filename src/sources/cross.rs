//! Checks of the sources' data against each other and the config: `geo.local_cluster` names a
//! cluster some source has (a typo would send every client to the global name), and one
//! federation per MCS `clusterset_domain` (else which one answers `SVC.NS.svc.DOMAIN` would
//! depend on load order). `fedns check`, the start and a config reload check every source at
//! once ([`problems`]); while serving, each federation-file edit is checked against what the
//! other sources serve and the config in effect ([`Accepted::admit`]), so an edit `check` would
//! refuse is refused like a file that does not parse (the last good data keeps serving), and an
//! edit refused only for another source's sake is tried again whenever what the other sources
//! claim changes, so what is served converges to the files on disk once they agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::dns::zonefile::Problem;
use crate::model::{DnsName, Federation};
use crate::sources::{Snapshot, Update};

/// What a federation claims that another source may not contradict.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub federation: String,
    pub clusterset_domain: Option<DnsName>,
    pub clusters: Vec<String>,
}

impl Claims {
    pub fn of(f: &Federation) -> Claims {
        Claims {
            federation: f.name.clone(),
            clusterset_domain: f.clusterset_domain.clone(),
            clusters: f.clusters.iter().map(|c| c.name.clone()).collect(),
        }
    }

    /// The `kubernetes:` section's, from the config (its clusters and domain are configured).
    fn of_kubernetes(config: &Config) -> Option<Claims> {
        let k = config.kubernetes.as_ref()?;
        Some(Claims {
            federation: k.federation.clone(),
            clusterset_domain: k.clusterset_domain.clone(),
            clusters: k.clusters.iter().map(|c| c.name.clone()).collect(),
        })
    }
}

/// The first line of `text` setting `key` (YAML `key:`, TOML `key =`), 1-based.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| matches!(rest.trim_start().chars().next(), Some(':' | '=')))
        })
        .map(|i| i + 1)
}

fn shown(d: &DnsName) -> String {
    d.to_string().trim_end_matches('.').to_string()
}

fn clusterset_message(field: &str, domain: &DnsName, other: &str) -> String {
    format!(
        "{field}: {:?}: federation {other:?} already serves the MCS names of this cluster-set domain (one federation per cluster set)",
        shown(domain)
    )
}

/// Every problem of the sources' data together (`updates`: the federation files as loaded), as
/// `check`, the start and a reload find them.
pub fn problems(config: &Config, updates: &[Update]) -> Vec<Problem> {
    local_cluster_problem(config, updates)
        .into_iter()
        .chain(clusterset_problem(config, updates))
        .collect()
}

fn federations(updates: &[Update]) -> impl Iterator<Item = (&str, &Federation)> {
    updates.iter().filter_map(|u| match &*u.snapshot {
        Snapshot::Federation(f) => Some((u.source.as_str(), &**f)),
        _ => None,
    })
}

/// `geo.local_cluster` must name a cluster of a federation file or of the `kubernetes:`
/// section.
fn local_cluster_problem(config: &Config, updates: &[Update]) -> Option<Problem> {
    let name = config.geo.local_cluster.as_ref()?;
    let known = federations(updates)
        .flat_map(|(_, f)| &f.clusters)
        .map(|c| &c.name)
        .chain(
            Claims::of_kubernetes(config)
                .iter()
                .flat_map(|k| &k.clusters),
        )
        .any(|c| c == name);
    (!known).then(|| Problem {
        file: config.path.display().to_string(),
        line: std::fs::read_to_string(&config.path)
            .ok()
            .and_then(|t| line_of_key(&t, "local_cluster")),
        message: format!(
            "geo.local_cluster: {name:?} is no cluster of a federation file or the kubernetes section"
        ),
    })
}

/// Two federations (files or the `kubernetes:` section) may not serve the same
/// `clusterset_domain`. Names the second one's file, line, field and value.
fn clusterset_problem(config: &Config, updates: &[Update]) -> Option<Problem> {
    let mut seen: Vec<(&DnsName, &str)> = Vec::new();
    // A federation file's source is `federation-file:BASE`: find its path for the message.
    let file_of = |source: &str| -> String {
        let base = source.trim_start_matches("federation-file:");
        let base = base.split('#').next().unwrap_or(base);
        (config.federation_files.iter())
            .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy() == base))
            .map_or_else(|| source.to_string(), |p| p.display().to_string())
    };
    let files = federations(updates).filter_map(|(source, f)| {
        Some((f.clusterset_domain.as_ref()?, f.name.as_str(), Some(source)))
    });
    let kube = config.kubernetes.iter().filter_map(|k| {
        Some((
            k.clusterset_domain.as_ref()?,
            k.federation.as_str(),
            None::<&str>,
        ))
    });
    for (domain, fed, source) in files.chain(kube) {
        if let Some((_, other)) = seen.iter().find(|(d, _)| *d == domain) {
            let (file, field) = match source {
                Some(s) => (file_of(s), "federation.clusterset_domain"),
                None => (
                    config.path.display().to_string(),
                    "kubernetes.clusterset_domain",
                ),
            };
            let line = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| line_of_key(&t, "clusterset_domain"));
            return Some(Problem {
                file,
                line,
                message: clusterset_message(field, domain, other),
            });
        }
        seen.push((domain, fed));
    }
    None
}

/// The problems an edit of the federation file `path` (source `source`, now `text`, parsed
/// as `new`) brings against `others` (the other files' accepted claims) and `config`.
fn edit_problems(
    config: &Config,
    others: &BTreeMap<&str, &Claims>,
    (source, path, text): (&str, &Path, &str),
    new: &Claims,
) -> Vec<Problem> {
    let kube = Claims::of_kubernetes(config);
    let rest: Vec<&Claims> = (others.iter())
        .filter(|(s, _)| **s != source)
        .map(|(_, c)| *c)
        .chain(kube.as_ref())
        .collect();
    let mut out = Vec::new();
    let problem = |line, message| Problem {
        file: path.display().to_string(),
        line,
        message,
    };
    if let Some(domain) = &new.clusterset_domain
        && let Some(other) = rest
            .iter()
            .find(|c| c.clusterset_domain.as_ref() == Some(domain))
    {
        out.push(problem(
            line_of_key(text, "clusterset_domain"),
            clusterset_message("federation.clusterset_domain", domain, &other.federation),
        ));
    }
    if let Some(name) = &config.geo.local_cluster
        && !new.clusters.contains(name)
        && !rest.iter().any(|c| c.clusters.contains(name))
    {
        let line = line_of_key(text, "clusters").or_else(|| {
            text.lines()
                .position(|l| l.trim_start().starts_with("[[clusters]]"))
                .map(|i| i + 1)
        });
        out.push(problem(
            line,
            format!(
                "clusters: no cluster {name:?} any more, which geo.local_cluster in {} names and no other source has",
                config.path.display()
            ),
        ));
    }
    out
}

/// The federation files' claims as served, and the config in effect, shared by the file
/// watchers and the reloader. Its lock is held for one check (a few comparisons per file),
/// and by a config reload while it validates, so no edit is admitted against a config being
/// replaced; never on the query path.
#[derive(Clone)]
pub struct Accepted(Arc<Mutex<Inner>>);

struct Inner {
    config: Config,
    /// Per source, the file it reads and what it claims.
    files: BTreeMap<String, (PathBuf, Claims)>,
    /// Bumped whenever the claims or the config change: an edit refused at one generation may
    /// pass at the next.
    generation: u64,
}

/// A refused edit: its problems, and the generation it was refused at.
pub struct Held {
    pub generation: u64,
    pub problems: Vec<Problem>,
}

impl Accepted {
    /// As at start: `config` and the federation files (source, path, federation as loaded),
    /// which passed [`problems`].
    pub fn new<'a>(
        config: &Config,
        files: impl IntoIterator<Item = (String, PathBuf, &'a Federation)>,
    ) -> Accepted {
        let files = files
            .into_iter()
            .map(|(s, p, f)| (s, (p, Claims::of(f))))
            .collect();
        Accepted(Arc::new(Mutex::new(Inner {
            config: config.clone(),
            files,
            generation: 0,
        })))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.inner().generation
    }

    /// Checks an edit of the federation file `path` (source `source`, its text `text`, parsed
    /// as `f`) against the others and the config in effect; if it passes, it is what `source`
    /// claims from now on. A task a reload is replacing by a source of the same name reading
    /// another path changes nothing here.
    pub fn admit(&self, source: &str, path: &Path, text: &str, f: &Federation) -> Result<(), Held> {
        let mut inner = self.inner();
        if inner.files.get(source).is_some_and(|(p, _)| p != path) {
            return Ok(());
        }
        let new = Claims::of(f);
        let others: BTreeMap<&str, &Claims> = (inner.files.iter())
            .map(|(s, (_, c))| (s.as_str(), c))
            .collect();
        let problems = edit_problems(&inner.config, &others, (source, path, text), &new);
        if !problems.is_empty() {
            return Err(Held {
                generation: inner.generation,
                problems,
            });
        }
        if inner.files.get(source).map(|(_, c)| c) != Some(&new) {
            inner
                .files
                .insert(source.to_string(), (path.to_path_buf(), new));
            inner.generation += 1;
        }
        Ok(())
    }

    /// A federation file a reload started (it passed the reload's checks).
    pub fn set(&self, source: &str, path: &Path, f: &Federation) {
        let mut inner = self.inner();
        inner
            .files
            .insert(source.to_string(), (path.to_path_buf(), Claims::of(f)));
        inner.generation += 1;
    }

    /// A file source a reload stopped following.
    pub fn forget(&self, source: &str) {
        let mut inner = self.inner();
        if inner.files.remove(source).is_some() {
            inner.generation += 1;
        }
    }

    /// Runs a reload's checks of `config` (`check`) with no edit admitted meanwhile; a version
    /// that passes is the config edits are checked against from then on.
    pub fn validate_config(
        &self,
        config: &Config,
        check: impl FnOnce(&Config) -> Vec<Problem>,
    ) -> Vec<Problem> {
        let mut inner = self.inner();
        let problems = check(config);
        if problems.is_empty() {
            inner.config = config.clone();
            inner.generation += 1;
        }
        problems
    }

    /// Puts back the config edits are checked against (a reload that failed after validating).
    pub fn set_config(&self, config: &Config) {
        let mut inner = self.inner();
        inner.config = config.clone();
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(name: &str, domain: Option<&str>, clusters: &[&str]) -> Federation {
        let mut text = format!("federation:\n  name: {name}\n  zone: example.com\n");
        if let Some(d) = domain {
            text.push_str(&format!("  clusterset_domain: {d}\n"));
        }
        text.push_str("clusters:\n");
        for c in clusters {
            text.push_str(&format!("  - {{name: {c}, region: r}}\n"));
        }
        text.push_str("services: []\n");
        crate::sources::federation_file::parse(Path::new("f.yaml"), &text).unwrap()
    }

    fn config(extra: &str) -> Config {
        Config::parse(
            Path::new("/x/fedns.yaml"),
            &format!("zones_dir: zones\n{extra}"),
        )
        .unwrap()
    }

    fn file<'a>(source: &str, f: &'a Federation) -> (String, PathBuf, &'a Federation) {
        let path = format!("{}.yaml", source.trim_start_matches("file:"));
        (source.into(), path.into(), f)
    }

    #[test]
    fn keys_are_found_in_yaml_and_toml_but_not_as_prefixes() {
        let yaml = "federation:\n  clusterset_domains_x: 1\n  clusterset_domain: a\n";
        assert_eq!(line_of_key(yaml, "clusterset_domain"), Some(3));
        let toml = "[federation]\nclusterset_domain = \"a\"\n";
        assert_eq!(line_of_key(toml, "clusterset_domain"), Some(2));
        assert_eq!(line_of_key("x: 1\n", "clusterset_domain"), None);
    }

    #[test]
    fn an_edit_taking_a_served_clusterset_domain_is_held_until_the_other_lets_it_go() {
        let cfg = config("");
        let a = fed("a", Some("clusterset.local"), &["c1"]);
        let b = fed("b", None, &["c2"]);
        let acc = Accepted::new(&cfg, [file("file:a", &a), file("file:b", &b)]);
        let text =
            "federation:\n  name: b\n  zone: example.com\n  clusterset_domain: clusterset.local\n";
        let b2 = fed("b", Some("clusterset.local"), &["c2"]);
        let held = acc
            .admit("file:b", Path::new("b.yaml"), text, &b2)
            .expect_err("refused");
        assert_eq!(held.problems.len(), 1);
        assert_eq!(
            held.problems[0].to_string(),
            "b.yaml:4: federation.clusterset_domain: \"clusterset.local\": federation \"a\" already serves the MCS names of this cluster-set domain (one federation per cluster set)"
        );
        // A's own edit keeping its domain is fine and changes no claim: no new generation.
        let a_same = fed("a", Some("clusterset.local"), &["c1"]);
        assert!(
            acc.admit("file:a", Path::new("a.yaml"), "", &a_same)
                .is_ok()
        );
        assert_eq!(acc.generation(), held.generation);
        // A lets it go: a new generation, and B's edit passes.
        assert!(
            acc.admit("file:a", Path::new("a.yaml"), "", &fed("a", None, &["c1"]))
                .is_ok()
        );
        assert!(acc.generation() > held.generation);
        assert!(acc.admit("file:b", Path::new("b.yaml"), text, &b2).is_ok());
        // A task still reading another path under B's name (a reload replacing it) changes
        // nothing.
        let before = acc.generation();
        assert!(
            acc.admit(
                "file:b",
                Path::new("old/b.yaml"),
                "",
                &fed("b", None, &["c2"])
            )
            .is_ok()
        );
        assert_eq!(acc.generation(), before);
        // And now A may not take it back.
        assert!(
            acc.admit(
                "file:a",
                Path::new("a.yaml"),
                "",
                &fed("a", Some("clusterset.local"), &["c1"])
            )
            .is_err()
        );
    }

    #[test]
    fn an_edit_against_the_kubernetes_section_or_local_cluster_is_refused() {
        let cfg = config(
            "geo:\n  local_cluster: c1\nkubernetes:\n  federation: kfed\n  zone: example.org\n  clusterset_domain: k.local\n  clusters:\n    - {name: k1, kubeconfig: kc}\n",
        );
        let a = fed("a", None, &["c1", "c2"]);
        let acc = Accepted::new(&cfg, [file("file:a", &a)]);
        let text = "federation:\n  name: a\nclusters:\n  - {name: c2}\n";
        let held = acc
            .admit(
                "file:a",
                Path::new("a.yaml"),
                text,
                &fed("a", Some("k.local"), &["c2"]),
            )
            .expect_err("refused");
        let said: Vec<String> = held.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].contains("federation \"kfed\" already serves"),
            "{said:?}"
        );
        assert!(
            said[1].starts_with("a.yaml:3: clusters: no cluster \"c1\" any more"),
            "{said:?}"
        );
        // File a, now serving only cluster `c`, without a cluster-set domain.
        let admit_a = |acc: &Accepted, c: &str| {
            acc.admit("file:a", Path::new("a.yaml"), text, &fed("a", None, &[c]))
        };
        // Another source having the cluster is enough.
        acc.set("file:b", Path::new("b.yaml"), &fed("b", None, &["c1"]));
        assert!(admit_a(&acc, "c2").is_ok());
        // Forgetting b now would leave c1 nowhere; a config without local_cluster lifts it.
        acc.forget("file:b");
        assert!(admit_a(&acc, "c3").is_err());
        let plain = config("");
        assert!(acc.validate_config(&plain, |_| Vec::new()).is_empty());
        assert!(admit_a(&acc, "c3").is_ok());
    }
}

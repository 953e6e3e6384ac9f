//! The zone-file source: every `*.zone` file in a directory, as one snapshot of static zones.
//!
//! A broken file keeps its last good version in the snapshot (others still update); a file that
//! never parsed is left out and reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dns::zonefile::{self, Problem};
use crate::model::StaticZone;

/// The zone files of `dir`, sorted by name.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, Problem> {
    let entries = std::fs::read_dir(dir).map_err(|e| Problem {
        file: dir.display().to_string(),
        line: None,
        message: e.to_string(),
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "zone") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Loads a zone directory, keeping `last_good` for files that fail now.
pub struct ZoneDir {
    pub dir: PathBuf,
    last_good: BTreeMap<PathBuf, StaticZone>,
}

impl ZoneDir {
    pub fn new(dir: PathBuf) -> Self {
        ZoneDir {
            dir,
            last_good: BTreeMap::new(),
        }
    }

    /// All zones (fresh or last good) and the problems found this time.
    pub fn load(&mut self) -> (Vec<StaticZone>, Vec<Problem>) {
        let mut problems = Vec::new();
        let paths = match files(&self.dir) {
            Ok(p) => p,
            Err(p) => return (self.last_good.values().cloned().collect(), vec![p]),
        };
        self.last_good.retain(|p, _| paths.contains(p));
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem {
                        file: path.display().to_string(),
                        line: None,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            match zonefile::parse(&path, &text) {
                Ok(z) => {
                    self.last_good.insert(path, z);
                }
                Err(p) => problems.extend(p),
            }
        }
        (self.last_good.values().cloned().collect(), problems)
    }
}

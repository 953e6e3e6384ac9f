//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the fuzz targets
//! run (`fedns::fuzz`), plus a fixed set of deterministic mutations of every seed, so a
//! regression that a fuzzer once found (or that a seed's neighbourhood holds) fails a plain
//! `cargo test` on stable, in CI, in a few seconds. New crashes found by `cargo fuzz` go into
//! the corpus directory of their target.

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("dir entry").path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).expect("corpus file"),
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{target}: corpus too small ({})",
        files.len()
    );
    files
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }
}

/// `n` deterministic mutants of `seed`: bytes changed, inserted, removed, cut.
fn mutants(seed: &[u8], n: usize, rng: &mut Lcg) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut m = seed.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len() + 1);
                match rng.below(4) {
                    0 if i < m.len() => m[i] = rng.next() as u8,
                    1 => m.insert(i.min(m.len()), rng.next() as u8),
                    2 if i < m.len() => {
                        m.remove(i);
                    }
                    3 => m.truncate(i),
                    _ => {}
                }
            }
            m
        })
        .collect()
}

/// Every corpus file, then `budget` mutants spread over them (at least 10 per file).
fn replay(target: &str, check: fn(&[u8]), budget: usize) {
    let mut rng = Lcg(0xf00d_5eed ^ target.len() as u64);
    let files = corpus(target);
    let per_file = (budget / files.len()).max(10);
    for (name, seed) in files {
        check(&seed);
        for m in mutants(&seed, per_file, &mut rng) {
            let r = std::panic::catch_unwind(|| check(&m));
            assert!(r.is_ok(), "{target}: a mutant of {name} fails: {m:02x?}");
        }
    }
}

#[test]
fn respond_corpus() {
    replay("respond", fedns::fuzz::respond_check, 20_000);
}

#[test]
fn zonefile_corpus() {
    replay("zonefile", fedns::fuzz::zonefile_check, 600);
}

#[test]
fn federation_corpus() {
    replay("federation", fedns::fuzz::federation_check, 600);
}

#[test]
fn skydns_corpus() {
    replay("skydns", fedns::fuzz::skydns_check, 2_000);
}

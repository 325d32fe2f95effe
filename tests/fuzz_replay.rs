//! Stable-toolchain replay of the checked-in fuzz corpora (`fuzz/corpus/<target>/`).
//!
//! Each test runs every file of one target's corpus through the same body the
//! fuzz target runs (`tests/fuzz_support.rs`, which the fuzz targets include
//! with `#[path]`), so `cargo test` on stable checks the seeds and whatever
//! inputs fuzzing added to the corpus. No Dovecot needed; a few seconds.
//!
//! `mutf7` and `sasl_plain` are replayed by unit tests in `src/mutf7.rs` and
//! `src/sasl.rs`.
//!
//! Every crash fuzzing found is fixed; its reproducer lives in the corpus, so
//! this replay keeps it fixed.

mod fuzz_support;

use std::{
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    path::{Path, PathBuf},
};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `body` on every file under `fuzz/<kind>/<target>/`, naming the file
/// that fails; returns how many there were.
fn run(kind: &str, target: &str, body: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let files = files(&dir);
    let tracing = std::env::var_os("FERRY_FUZZ_TRACE").is_some();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if tracing {
            eprintln!("== {}", path.display());
        }
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
            eprintln!("fuzz input {} failed", path.display());
            resume_unwind(panic);
        }
    }
    files.len()
}

fn replay(target: &str, body: fn(&[u8])) {
    let seen = run("corpus", target, body);
    assert!(seen >= 12, "only {seen} files in fuzz/corpus/{target}");
}

#[test]
fn client_session_corpus() {
    replay("client_session", fuzz_support::client_session);
}

#[test]
fn store_session_corpus() {
    replay("store_session", fuzz_support::store_session);
}

#[test]
fn namespace_corpus() {
    replay("namespace", fuzz_support::namespace);
}

#[test]
fn config_corpus() {
    let seen = run("corpus", "config", fuzz_support::config_text);
    assert!(seen > 0, "empty fuzz/corpus/config");
}

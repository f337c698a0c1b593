//! The fuzz seed corpus (dataplane/fuzz/corpus/frame_parse/) holds the sample frames.
//!
//! `DWCP_WRITE_SEED_CORPUS=1 cargo test -p dwcp-proto --test seed_corpus` rewrites it; the
//! normal run checks that the committed files are exactly the current samples, so the corpus
//! cannot silently go stale when the format changes.

mod common;

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame_parse")
}

#[test]
fn seed_corpus_matches_samples() {
    let dir = corpus_dir();
    let write = std::env::var_os("DWCP_WRITE_SEED_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in common::sample_frames() {
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; rewrite with DWCP_WRITE_SEED_CORPUS=1",
                    path.display()
                )
            });
            assert_eq!(
                on_disk,
                bytes,
                "{} is stale; rewrite with DWCP_WRITE_SEED_CORPUS=1",
                path.display()
            );
        }
    }
}

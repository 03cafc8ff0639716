//! Replays every committed corpus file (seeds and any crash found later) through its
//! target as a plain test: no fuzzer needed, so CI runs it on every change.

use std::path::Path;

#[test]
fn every_corpus_file_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in kt_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {name}");
        for file in &files {
            let data = std::fs::read(file).expect("read");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
        }
        println!("{name}: {} inputs", files.len());
    }
}

#[test]
fn the_seeds_take_the_success_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let failed = kt_fuzz::check_seeds(&root);
    assert!(failed.is_empty(), "seeds that do not verify: {failed:?}");
}

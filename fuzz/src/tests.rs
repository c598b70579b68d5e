//! Replays the in-repo corpus through every target and keeps the generated seeds current.
//! `UPDATE_SEEDS=1 cargo test` rewrites the generated seed files.

use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn generated_seeds_are_current() {
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in crate::generated_seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(name);
        if fs::read(&path).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        if update {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &bytes).unwrap();
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale seeds (run `UPDATE_SEEDS=1 cargo test` in fuzz/): {stale:?}"
    );
}

/// Every seed and every saved regression input runs clean.
#[test]
fn corpus_and_regressions_replay() {
    for (target, run) in crate::TARGETS {
        let mut count = 0;
        for sub in ["corpus", "regressions"] {
            for file in files_in(&fuzz_dir().join(sub).join(target)) {
                let data = fs::read(&file).unwrap();
                eprintln!("{target}: {}", file.display());
                run(&data);
                count += 1;
            }
        }
        assert!(count > 0, "{target} has no seeds");
    }
}

#[test]
fn empty_and_tiny_inputs_run() {
    for (_, run) in crate::TARGETS {
        run(&[]);
        for byte in 0..=255u8 {
            run(&[byte]);
        }
    }
}

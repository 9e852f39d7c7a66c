//! The proof chain holds at compile time: outside the pipeline, safe code can neither make
//! an `Audited` nor copy, alter or reuse one, nor reach an upstream around it.
//!
//! Each case in `tests/compile_fail/` is compiled by rustc against the very library this
//! test was linked with (no second build of the dependency tree), and must fail with the
//! error its first line names (`// expect: …`). A control that spends a proof once must
//! compile, so that the cases fail for what they show and not for a fault of the harness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The deps folder this test binary sits in, and the newest capgate rlib in it (the one the
/// test was just linked with).
fn library() -> (PathBuf, PathBuf) {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let rlib = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("libcapgate-") && name.ends_with(".rlib")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).unwrap())
        .expect("the capgate rlib beside this test");
    (deps, rlib)
}

/// Compiles `file` as a library crate against capgate (type-checking only); returns its
/// success and its diagnostics.
fn compile(file: &Path) -> (bool, String) {
    let (deps, rlib) = library();
    let out_dir = tempfile::tempdir().unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
            "--crate-name",
            "case",
        ])
        .arg("--extern")
        .arg(format!("capgate={}", rlib.display()))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("--out-dir")
        .arg(out_dir.path())
        .arg(file)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compile_fail");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn spending_a_proof_once_compiles() {
    let control = cases().into_iter().find(|p| p.to_string_lossy().ends_with(".control.rs")).unwrap();
    let (ok, stderr) = compile(&control);
    assert!(ok, "the control case must compile:\n{stderr}");
}

#[test]
fn proofs_cannot_be_forged_copied_altered_reused_or_bypassed() {
    let failing: Vec<PathBuf> = cases()
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".control.rs"))
        .collect();
    assert!(failing.len() >= 7, "{failing:?}");
    for file in failing {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .unwrap_or_else(|| panic!("{} names no expected error", file.display()));
        let (ok, stderr) = compile(&file);
        assert!(!ok, "{} compiled, but must not", file.display());
        assert!(
            stderr.contains(expect),
            "{} failed, but not with `{expect}`:\n{stderr}",
            file.display()
        );
    }
}

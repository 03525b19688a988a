//! Where things are: the workspace, scenarios, corpus, output, the binary and tools.

use std::path::{Path, PathBuf};

/// The `tests/e2e` crate directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    crate_dir().join("..").join("..")
}

/// `tests/e2e/out`, where each slot writes its logs (git-ignored).
pub fn out_root() -> PathBuf {
    crate_dir().join("out")
}

/// The SIPp scenario `tests/e2e/scenarios/<name>.xml`; panics if it does not exist.
pub fn scenario(name: &str) -> PathBuf {
    let path = crate_dir().join("scenarios").join(format!("{name}.xml"));
    assert!(path.is_file(), "no SIPp scenario {}", path.display());
    path
}

/// `tests/e2e/corpus/malformed`.
pub fn malformed_corpus_dir() -> PathBuf {
    crate_dir().join("corpus").join("malformed")
}

/// The `palisade` binary under test: `$PALISADE_BIN`, else
/// `$CARGO_TARGET_DIR/release/palisade`, else `<workspace>/target/release/palisade`.
/// Panics with a build hint when none exists.
pub fn palisade_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PALISADE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "PALISADE_BIN={} does not exist; build it with `cargo build --release -p palisade`",
            bin.display()
        );
        return bin;
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        tried.push(Path::new(&dir).join("release").join("palisade"));
    }
    tried.push(
        workspace_root()
            .join("target")
            .join("release")
            .join("palisade"),
    );
    for bin in &tried {
        if bin.is_file() {
            return bin.clone();
        }
    }
    panic!(
        "the palisade binary was not found (tried {tried:?}); run `cargo build --release -p palisade` \
         and/or set PALISADE_BIN to the built binary"
    );
}

/// The full path of `tool` on PATH. Panics when missing: in CI a missing tool is
/// a failure, never a skip.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{tool}` is not on PATH; install the end-to-end test tools with \
         `sudo scripts/install-test-deps.sh` (Debian package list inside)"
    );
}

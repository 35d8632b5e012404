//! Test inputs: the project's own files under `tests/fixtures/`, plus the
//! matching files of `../shared/fixtures/` when that folder sits beside the
//! checkout. Both are read at run time, so a clone of this repository alone
//! builds and passes; the shared cases only add coverage.

use std::path::PathBuf;

fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

/// Every line of `relative` (e.g. `adversarial/hostile_input.txt`): the
/// project's file first, then the shared one's when present.
pub fn lines(relative: &str) -> Vec<String> {
    let own = std::fs::read_to_string(project_dir().join(relative))
        .unwrap_or_else(|e| panic!("tests/fixtures/{relative}: {e}"));
    let mut all: Vec<String> = own.lines().map(str::to_owned).collect();
    if let Ok(shared) = std::fs::read_to_string(shared_dir().join(relative)) {
        all.extend(shared.lines().map(str::to_owned));
    }
    all
}

/// The hostile inputs, one a line.
pub fn hostile() -> Vec<String> {
    lines("adversarial/hostile_input.txt")
}

/// Files (name, text) in `folder` of both fixture trees, the project's first.
#[allow(dead_code)] // used by the memory tests
pub fn documents(folder: &str) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    for dir in [project_dir().join(folder), shared_dir().join(folder)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                docs.push((name, text));
            }
        }
    }
    docs
}

/// The text of `relative` under `../shared/fixtures/`, when present.
#[allow(dead_code)] // used by the policy tests
pub fn shared_text(relative: &str) -> Option<String> {
    std::fs::read_to_string(shared_dir().join(relative)).ok()
}

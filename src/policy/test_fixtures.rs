//! Fixture lines for the policy unit tests: the project's own files, and
//! `../shared/fixtures` beside the checkout when present (read at run
//! time, never compiled in).

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Non-empty lines of `tests/fixtures/<relative>`.
pub fn lines(relative: &str) -> Vec<String> {
    let path = root().join("tests/fixtures").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The shared fixture's lines, when that folder is there.
/// `SOLOIST_SHARED_FIXTURES` points elsewhere (a worktree's neighbour).
pub fn shared_lines(relative: &str) -> Option<Vec<String>> {
    let dir = std::env::var_os("SOLOIST_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/fixtures"));
    let text = std::fs::read_to_string(dir.join(relative)).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

pub fn default_settings() -> crate::config::Settings {
    crate::config::Settings::load(&crate::config::LoadOptions::default()).expect("defaults load")
}

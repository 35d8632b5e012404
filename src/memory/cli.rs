//! `soloist ingest PATH` and `soloist eval retrieval FILE.tsv`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{Memory, eval};
use crate::config::Settings;
use crate::store::Store;

async fn open(settings: &Settings, home: &Path) -> anyhow::Result<Memory> {
    let url = settings.database_url(home);
    let store = Store::open(&url, 1).await.context("opening the database")?;
    Ok(Memory::from_settings(store, settings))
}

/// Ingests a file, folder or URL and prints one line per source; with
/// `refresh`, fetches every URL source again first.
pub async fn ingest(
    settings: Settings,
    home: &Path,
    path: Option<&Path>,
    refresh: bool,
) -> anyhow::Result<ExitCode> {
    let memory = open(&settings, home).await?;
    if refresh {
        for (name, outcome) in memory.refresh_urls().await? {
            match outcome {
                Ok(outcome) => println!("{name}: {outcome}"),
                Err(error) => println!("{name}: not refreshed: {error}"),
            }
        }
    }
    let Some(path) = path else {
        memory.store().close().await;
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(url) = path
        .to_str()
        .filter(|p| p.starts_with("http://") || p.starts_with("https://"))
    {
        let (fetched, outcome) = memory
            .ingest_url(url, "soloist ingest")
            .await
            .with_context(|| format!("ingesting {url}"))?;
        println!("{url} (fetched {fetched}): {outcome}");
        memory.store().close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes = memory
        .ingest_path(path)
        .await
        .with_context(|| format!("ingesting {}", path.display()))?;
    if outcomes.is_empty() {
        println!("no Markdown, text or HTML files under {}", path.display());
    }
    for (name, outcome) in &outcomes {
        println!("{name}: {outcome}");
    }
    memory.store().close().await;
    Ok(ExitCode::SUCCESS)
}

/// Prints recall@1, recall@3, MRR and p50/p95 for a question file.
pub async fn eval(
    settings: Settings,
    home: &Path,
    what: &str,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    if what != "retrieval" {
        anyhow::bail!("soloist eval knows 'retrieval' only (got '{what}')");
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let questions = eval::parse_questions(&text).map_err(anyhow::Error::msg)?;
    let memory = open(&settings, home).await?;
    let report = eval::evaluate(&memory, &questions).await?;
    println!("{report}");
    memory.store().close().await;
    Ok(ExitCode::SUCCESS)
}

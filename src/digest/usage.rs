//! The digest's retrieval use and guardrail flags for the reported day:
//! how many drafts offered for approval drew on the business's knowledge,
//! their most cited sources, and the guardrail flags by kind. Kept apart
//! from the cost and run numbers of [`super::numbers`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::store::{Store, StoreError, Window};

/// How many top sources the digest names.
const TOP_SOURCES: usize = 3;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RetrievalUse {
    /// Runs that offered a draft for approval that day.
    pub drafts: i64,
    /// Of those, runs whose retrieval returned knowledge.
    pub cited: i64,
    /// Percent of drafts that cited knowledge.
    pub share: f64,
    /// The most cited sources (file or URL label), by drafts citing them.
    pub top_sources: Vec<Count>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Count {
    pub name: String,
    pub count: i64,
}

/// Retrieval use of the drafts offered in `window`.
pub async fn retrieval_use(store: &Store, window: Window) -> Result<RetrievalUse, StoreError> {
    let drafts = store.drafts_offered(window).await?;
    let mut runs = BTreeSet::new();
    // source label -> runs citing it
    let mut sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (run, payload) in store.retrievals_of_offered_drafts(window).await? {
        let labels = chunk_labels(&payload);
        if labels.is_empty() {
            continue;
        }
        runs.insert(run.clone());
        for label in labels {
            sources.entry(label).or_default().insert(run.clone());
        }
    }
    let mut top: Vec<Count> = sources
        .into_iter()
        .map(|(name, runs)| Count {
            name,
            count: runs.len() as i64,
        })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    top.truncate(TOP_SOURCES);
    let cited = runs.len() as i64;
    Ok(RetrievalUse {
        drafts,
        cited,
        share: if drafts == 0 {
            0.0
        } else {
            cited as f64 * 100.0 / drafts as f64
        },
        top_sources: top,
    })
}

/// The labels of the knowledge chunks in one journaled retrieval.
fn chunk_labels(payload: &str) -> BTreeSet<String> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(payload) else {
        return BTreeSet::new();
    };
    event["output"]["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|chunk| {
            chunk
                .get("label")
                .or_else(|| chunk.get("source"))
                .and_then(|l| l.as_str())
        })
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Guardrail flags (and blocked or limited requests) in `window`, by kind.
pub async fn guardrail_flags(store: &Store, window: Window) -> Result<Vec<Count>, StoreError> {
    Ok(store
        .guardrail_counts(window)
        .await?
        .into_iter()
        .map(|(name, count)| Count { name, count })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retrieval_names_each_source_once() {
        let payload = r#"{"event":"step_completed","step":"recall","output":{"chunks":[
            {"label":"offers.md","text":"a"},{"label":"offers.md","text":"b"},{"label":"faq.md"}]}}"#;
        let labels: Vec<String> = chunk_labels(payload).into_iter().collect();
        assert_eq!(labels, ["faq.md", "offers.md"]);
        assert!(chunk_labels("not json").is_empty());
    }
}

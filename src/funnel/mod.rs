//! The content funnel's step kinds and the publisher behind them:
//!
//! - `fact_check`: every factual claim of a draft checked against the
//!   knowledge base with one structured model call (fast tier); the
//!   approval lists the unsupported and contradicted ones with their
//!   sources ("draft says 2015; about.md says founded in 2019").
//! - Revise and Back on an approve step with `revise = true`: Revise asks
//!   what to change and completes the step with the outcome `revise` (the
//!   flow file loops back to its writing step, which reads the instruction);
//!   the version it replaced is kept in working memory, and Back offers it
//!   again.
//! - `publish`: asks when (now, tomorrow 09:00, Monday 09:00, a time in the
//!   operator's zone), then records one publication per `publish.targets`
//!   channel; [`publish_due`] (the `publish_posts` schedule, and at once after the
//!   step for a post due now) claims due
//!   ones and posts them, once across restarts and processes.
//! - Compensation: a step declares `compensate = "retract"` in its flow
//!   file; `/retract RUN` (or the Retract button) deletes what it posted,
//!   cancels what it has not posted yet, and journals either; a failure is
//!   said, never swallowed.
//! - `/result RUN views=1200 clicks=40` and the digest's comparison.

mod commands;
mod fact;
mod platforms;
mod publish;

pub use fact::{fact_check, fact_notes};
pub use platforms::PlatformError;
pub use publish::{parse_when, publish_at_once, publish_due, publish_step, retract};

use serde::Deserialize;
use serde_json::json;

use crate::domain::{Platform, RunId};
use crate::engine::{Engine, RunState, Transition};
use crate::flows::{StepDef, StepKind};

/// `[publish]` in the settings.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct PublishSettings {
    /// Where a publish step posts: `telegram:<channel id>` (e.g.
    /// `telegram:-1001234567890` or `telegram:@studio_news`) or
    /// `discord:<channel id>`. The bot must be allowed to post there.
    #[serde(default)]
    pub targets: Vec<String>,
}

impl PublishSettings {
    /// The configured targets, or a sentence naming the first bad one.
    pub fn parsed(&self) -> Result<Vec<(Platform, String)>, String> {
        self.targets
            .iter()
            .map(|target| {
                let (platform, channel) = target.split_once(':').unwrap_or(("", ""));
                let platform = match platform.trim() {
                    "telegram" => Platform::Telegram,
                    "discord" => Platform::Discord,
                    _ => {
                        return Err(format!(
                            "publish.targets: '{target}' is not 'telegram:<channel id>' or 'discord:<channel id>'"
                        ));
                    }
                };
                let channel = channel.trim();
                if channel.is_empty() {
                    return Err(format!("publish.targets: '{target}' names no channel"));
                }
                Ok((platform, channel.to_string()))
            })
            .collect()
    }
}

/// The compensations a flow file may declare, by step kind.
const COMPENSATIONS: [(&str, &str); 1] = [("retract", "publish")];

/// A step's `compensate` must be one its kind knows how to do.
pub fn check_compensation(step: &StepDef, compensation: &str) -> Result<(), String> {
    let kind = match step.kind {
        StepKind::Publish { .. } => "publish",
        _ => "",
    };
    if COMPENSATIONS
        .iter()
        .any(|(name, for_kind)| *name == compensation && *for_kind == kind)
    {
        return Ok(());
    }
    Err(format!(
        "step '{}' declares compensate = \"{compensation}\", which its kind cannot do (known: retract on a publish step)",
        step.name
    ))
}

fn memory(engine: &Engine) -> crate::memory::Memory {
    crate::memory::Memory::new(engine.store().clone(), engine.settings().memory.clone())
}

fn previous_key(step: &str) -> String {
    format!("funnel.previous.{step}")
}

/// The output of an approve step the operator asked to revise: the outcome
/// the flow file branches on, the instruction for the rewrite, the text
/// being revised (which Back restores).
pub fn revise_output(draft: &str, instruction: &str) -> serde_json::Value {
    json!({
        "outcome": "revise",
        "decision": "revise",
        "instruction": instruction,
        "text": draft,
        "previous": draft,
    })
}

/// The version before the latest revision: kept in working memory, or (once
/// that expired) the journal's copy in the step's last `revise` output.
pub async fn previous_version(
    engine: &Engine,
    run_id: RunId,
    step: &str,
    state: &RunState,
) -> Option<String> {
    let kept = memory(engine)
        .kept(&run_id.to_string(), &previous_key(step))
        .await;
    match kept {
        Ok(Some(text)) => return Some(text),
        Ok(None) => {}
        Err(error) => tracing::warn!(error = ?error, "reading working memory failed"),
    }
    let output = state.outputs.get(step)?;
    (output.get("outcome").and_then(|o| o.as_str()) == Some("revise"))
        .then(|| output.get("previous").and_then(|p| p.as_str()))
        .flatten()
        .map(str::to_string)
}

/// Keeps the version a revision replaces in the run's working memory.
/// Idempotent (the same key and value), so a step repeated after a lapsed
/// claim writes the same thing.
pub async fn keep_previous(engine: &Engine, run_id: RunId, transition: &Transition) {
    for event in &transition.events {
        let crate::domain::JournalEvent::StepCompleted { step, output } = event else {
            continue;
        };
        if output.get("outcome").and_then(|o| o.as_str()) != Some("revise") {
            continue;
        }
        let Some(previous) = output.get("previous").and_then(|p| p.as_str()) else {
            continue;
        };
        let key = previous_key(step);
        if let Err(error) = memory(engine)
            .keep(&run_id.to_string(), &key, previous)
            .await
        {
            // The journal keeps a copy; Back falls back to it.
            tracing::warn!(error = ?error, "keeping the previous version failed");
        }
    }
}

pub(crate) use commands::{deliver_publish_time_in, record_results, results_lines};

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::flows::{FlowCatalog, Prompts};

    fn load_with(flow: &str) -> Result<FlowCatalog, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config/flows")).unwrap();
        std::fs::write(dir.path().join("config/flows/odd.toml"), flow).unwrap();
        let prompts = Prompts::load(Path::new("/nonexistent")).unwrap();
        FlowCatalog::load(dir.path(), &prompts).map_err(|e| e.to_string())
    }

    #[test]
    fn a_compensation_its_step_kind_cannot_do_is_refused_when_flows_load() {
        let head = "name = \"odd\"\ndescription = \"x\"\ncost_label = \"balanced\"\n\
                    [[steps]]\nname = \"brief\"\nkind = \"context\"\n";
        let error = load_with(&format!("{head}compensate = \"retract\"\n")).unwrap_err();
        assert!(error.contains("compensate = \"retract\""), "{error}");
        let error = load_with(&format!(
            "{head}[[steps]]\nname = \"out\"\nkind = \"publish\"\ntext_from = \"brief\"\ncompensate = \"undo_everything\"\n"
        ))
        .unwrap_err();
        assert!(error.contains("undo_everything"), "{error}");
        let catalog = load_with(&format!(
            "{head}[[steps]]\nname = \"out\"\nkind = \"publish\"\ntext_from = \"brief\"\ncompensate = \"retract\"\n"
        ))
        .unwrap();
        assert_eq!(
            catalog.get("odd").unwrap().steps[1].compensate.as_deref(),
            Some("retract")
        );
    }

    #[test]
    fn an_approval_offering_revise_without_a_loop_back_is_refused_when_flows_load() {
        let flow = "name = \"odd\"\ndescription = \"x\"\ncost_label = \"balanced\"\n\
                    [[steps]]\nname = \"write\"\nkind = \"context\"\n\
                    [[steps]]\nname = \"review\"\nkind = \"approve\"\ndraft_from = \"write\"\n\
                    artifact_kind = \"post\"\nrevise = true\n";
        let error = load_with(flow).unwrap_err();
        assert!(error.contains("offers Revise"), "{error}");
        assert!(load_with(&format!("{flow}next = {{ revise = \"write\" }}\n")).is_ok());
    }

    #[test]
    fn the_built_in_post_flow_checks_facts_offers_revise_and_can_retract() {
        let prompts = Prompts::load(Path::new("/nonexistent")).unwrap();
        let catalog = FlowCatalog::load(Path::new("/nonexistent"), &prompts).unwrap();
        let post = catalog.get("post").unwrap();
        let kinds: Vec<&str> = post.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            kinds,
            ["brief", "recall", "write", "check", "review", "publish"]
        );
        assert_eq!(post.steps[5].compensate.as_deref(), Some("retract"));
    }
}

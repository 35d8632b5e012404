//! `/autonomy` (each flow's level, where it comes from, its last-20
//! approval rate) and `/autonomy FLOW LEVEL` (owner only). The controller's
//! handler (`controller/autonomy.rs`) calls these.

use std::fmt::Write;

use super::store::WINDOW;
use super::{Change, Level, level_in, level_of, record_of, set_level_in};
use crate::config::Settings;
use crate::flows::{FlowCatalog, StepKind};
use crate::store::{Store, StoreResult, Tx};

/// What only the owner may do, said to anyone else.
pub const OWNER_ONLY: &str = "Only the owner changes a flow's autonomy level.";

/// The flows with an approve step: the only ones a level changes.
pub fn flows_with_approvals(flows: &FlowCatalog) -> Vec<&str> {
    let mut names: Vec<&str> = flows
        .names()
        .filter(|name| {
            flows.get(name).is_some_and(|flow| {
                flow.steps
                    .iter()
                    .any(|s| matches!(s.kind, StepKind::Approve { .. }))
            })
        })
        .collect();
    names.sort_unstable();
    names
}

/// `/autonomy`: every flow with approvals, its level and its record.
pub async fn list(store: &Store, settings: &Settings, flows: &FlowCatalog) -> StoreResult<String> {
    let mut text = String::from(
        "Autonomy levels (always: every approval waits for you; borderline: only cases the flow marks uncertain; never: runs unattended and tells you after; a guardrail flag always waits):",
    );
    for flow in flows_with_approvals(flows) {
        let level = level_of(store, settings, flow).await?;
        let record = record_of(store, flow).await?;
        let rate = if record.decisions == 0 {
            "no decisions yet".to_string()
        } else {
            format!(
                "last {} decisions: {} approved unchanged ({}%)",
                record.decisions,
                record.approved,
                record.percent()
            )
        };
        let _ = write!(
            text,
            "\n{flow}: {} ({}), {rate}",
            level.level,
            level.source.as_str()
        );
    }
    let _ = write!(
        text,
        "\nChange one with /autonomy FLOW LEVEL. After {WINDOW} decisions approved unchanged, the digest proposes the next level."
    );
    Ok(text)
}

/// What `/autonomy FLOW LEVEL` asks for, or the sentence saying why it
/// cannot be done.
pub fn parse<'a>(args: &'a str, flows: &FlowCatalog) -> Result<(&'a str, Level), String> {
    let known = flows_with_approvals(flows);
    let words: Vec<&str> = args.split_whitespace().collect();
    let [flow, level] = words[..] else {
        return Err(format!(
            "Use /autonomy FLOW LEVEL, e.g. /autonomy lead-qualification borderline. Flows: {}. Levels: always, borderline, never.",
            known.join(", ")
        ));
    };
    if !known.contains(&flow) {
        return Err(format!(
            "There is no flow '{}' with approvals. Flows: {}.",
            crate::domain::clip(flow, 40),
            known.join(", ")
        ));
    }
    let level: Level = level
        .parse()
        .map_err(|e: super::UnknownLevel| format!("{e}."))?;
    Ok((flow, level))
}

/// Sets the level asked for in chat, in the transaction that marks the
/// command handled; the reply.
pub async fn set_in(
    tx: &mut Tx,
    settings: &Settings,
    (flow, to): (&str, Level),
    by: &str,
) -> StoreResult<String> {
    let from = level_in(tx, settings, flow).await?.level;
    if from == to {
        return Ok(format!("{flow} already runs at '{to}': {}.", to.meaning()));
    }
    let change = Change {
        flow,
        from,
        to,
        by,
        reason: "set in chat (/autonomy)",
    };
    set_level_in(tx, change).await?;
    Ok(format!(
        "{flow} now runs at '{to}' (was '{from}'): {}.",
        to.meaning()
    ))
}

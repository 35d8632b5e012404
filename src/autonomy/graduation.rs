//! Graduation and drop-back. When a flow's last 20 human decisions since
//! its level last changed were (≥ 95%) approvals of the draft as offered,
//! the daily digest proposes the next level with Yes / Not yet buttons
//! (action buttons: opaque tokens stored server-side, usable once). Yes
//! raises the level; Not yet is recorded and the proposal waits for 20
//! more decisions. An edit, revision or rejection on a flow above
//! `always` lowers it one level at once and says so in the run's chat.
//! Graduation is never automatic: only the owner's press or the settings
//! raise a level.

use super::store::{self, WINDOW};
use super::{Change, Level, Record, level_in, level_of, set_level_in};
use crate::config::Settings;
use crate::domain::{Action, ChatRef, Decision, Outbound, Platform, action_buttons};
use crate::store::{Decided, Store, StoreError, StoreResult, Tx, now_ms};

/// A proposal to raise a flow's level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub flow: String,
    pub from: Level,
    pub to: Level,
    /// The decisions it is based on.
    pub record: Record,
}

/// Every flow that has earned its next level and has not been answered
/// since.
pub async fn graduation_proposals(
    store: &Store,
    settings: &Settings,
) -> StoreResult<Vec<Proposal>> {
    let flows = {
        let mut conn = store.reads().acquire().await?;
        store::flows_with_decisions(&mut conn).await?
    };
    let mut proposals = Vec::new();
    for flow in flows {
        let from = level_of(store, settings, &flow).await?.level;
        let Some(to) = from.raised() else {
            continue;
        };
        let mut conn = store.reads().acquire().await?;
        let since = store::last_change_at(&mut conn, &flow).await?;
        let record = store::recent_decisions(&mut conn, &flow, since).await?;
        if record.earns_graduation() {
            proposals.push(Proposal {
                flow,
                from,
                to,
                record,
            });
        }
    }
    Ok(proposals)
}

/// The digest's proposal messages, each with Yes / Not yet; their tokens
/// are stored before the messages are returned. Call it where the digest
/// is delivered.
pub async fn digest_proposals(store: &Store, settings: &Settings) -> StoreResult<Vec<Outbound>> {
    let mut messages = Vec::new();
    let proposed_at = now_ms();
    for proposal in graduation_proposals(store, settings).await? {
        let answer = |raise| Action::AnswerGraduation {
            flow: proposal.flow.clone(),
            from: proposal.from,
            to: proposal.to,
            raise,
            proposed_at,
        };
        let (buttons, tokens) = action_buttons(vec![
            ("Yes".to_string(), answer(true)),
            ("Not yet".to_string(), answer(false)),
        ]);
        store.create_actions(&tokens).await?;
        messages.push(Outbound::text(proposal_text(&proposal)).with_buttons(buttons));
    }
    Ok(messages)
}

fn proposal_text(proposal: &Proposal) -> String {
    let Proposal {
        flow,
        from,
        to,
        record,
    } = proposal;
    format!(
        "Autonomy: of the last {} decisions on {flow}, {} approved the draft unchanged ({}%). Raise {flow} from '{from}' to '{to}' ({})? A guardrail flag still brings any draft back to you, and an edit or a rejection drops it back one level.",
        record.decisions,
        record.approved,
        record.percent(),
        to.meaning()
    )
}

/// A proposal as its buttons carry it.
#[derive(Debug, Clone, Copy)]
pub struct Proposed<'a> {
    pub flow: &'a str,
    pub from: Level,
    pub to: Level,
    /// When it was made (unix ms): a change or an answer since voids it.
    pub at: i64,
}

/// The owner's answer to a proposal (Yes raises `from` → `to`; Not yet
/// is recorded), in the transaction that takes the button. A proposal
/// answered before (its other button, a later digest's), or overtaken by a
/// change of level, changes nothing. What to reply.
pub async fn answer_in(
    tx: &mut Tx,
    settings: &Settings,
    proposal: Proposed<'_>,
    raise: bool,
    by: &str,
) -> StoreResult<String> {
    let Proposed { flow, from, to, at } = proposal;
    let now = level_in(tx, settings, flow).await?.level;
    let changed_since = store::last_change_at(tx.conn(), flow)
        .await?
        .is_some_and(|changed| changed >= at);
    if now != from || changed_since {
        return Ok(format!(
            "That proposal no longer applies: it was answered, or {flow}'s level changed since (it runs at '{now}'). /autonomy shows every flow."
        ));
    }
    if !raise {
        let change = Change {
            flow,
            from,
            to: from,
            by,
            reason: "graduation proposal answered: not yet",
        };
        set_level_in(tx, change).await?;
        return Ok(format!(
            "{flow} stays at '{from}'. I'll propose '{to}' again after {WINDOW} more decisions."
        ));
    }
    let change = Change {
        flow,
        from,
        to,
        by,
        reason: "graduation: the digest's proposal accepted",
    };
    set_level_in(tx, change).await?;
    Ok(format!(
        "{flow} now runs at '{to}': {}. An edit or a rejection drops it back one level; /autonomy {flow} {from} lowers it now.",
        to.meaning()
    ))
}

/// A person's edit, revision or rejection on a flow above `always` drops
/// it one level, in the decision's transaction; the run's chat is told.
pub async fn drop_back_in(
    tx: &mut Tx,
    settings: &Settings,
    decided: &Decided,
    by: &str,
) -> StoreResult<()> {
    // A renamed button is a choice, not a correction of a draft: declining
    // a borderline lead says nothing about the flow's drafts.
    let chose_between_options = decided.label.is_some();
    if chose_between_options
        || !matches!(
            decided.decision,
            Decision::Edit | Decision::Revise | Decision::Reject
        )
    {
        return Ok(());
    }
    let run = decided.run_id.to_string();
    let Some((flow, platform, chat_id)) = store::run_flow_and_chat(tx.conn(), &run).await? else {
        return Ok(());
    };
    let from = level_in(tx, settings, &flow).await?.level;
    let Some(to) = from.lowered() else {
        return Ok(());
    };
    let chose = decided.decision.label();
    let reason = format!(
        "drop-back: {by} chose {chose} on run {}",
        decided.run_id.short()
    );
    let change = Change {
        flow: &flow,
        from,
        to,
        by,
        reason: &reason,
    };
    set_level_in(tx, change).await?;
    let platform: Platform = platform
        .parse()
        .map_err(|e: String| StoreError::Corrupt(e))?;
    let text = format!(
        "Autonomy for {flow} drops from '{from}' to '{to}': you chose {chose} on run {}. /autonomy {flow} {from} raises it again.",
        decided.run_id.short()
    );
    tx.enqueue(
        &ChatRef::new(platform, chat_id),
        Some(decided.run_id),
        &Outbound::text(text),
    )
    .await
}

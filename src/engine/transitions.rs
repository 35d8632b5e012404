//! Every run transition, each one transaction: a step's outcome, a
//! decision, the operator's input, retry, cancel. The store gives the
//! table helpers ([`Tx`]); which status follows which, what is journaled
//! and who is woken is decided here. Functions ending in `_in` work inside
//! a caller's transaction, so the controller can commit the transition
//! together with marking the update that caused it handled.

use super::{Engine, EngineError};
use crate::domain::{
    Action, ApprovalId, ApprovalRole, ButtonToken, ChatRef, Decision, InputPurpose, JournalEvent,
    Outbound, RunId, RunStatus, Tier,
};
use crate::store::{
    ClaimedRun, Decided, Fenced, NewApproval, NewArtifact, NewBatchItem, StoreError, Tx,
};

/// Everything one step execution changes, committed in one transaction: the
/// journal events, the run's new status, the messages to send, and any
/// approval, artifact or decision reason the step produced.
#[derive(Debug, Clone)]
pub struct Transition {
    pub events: Vec<JournalEvent>,
    pub status: RunStatus,
    pub waiting_for: Option<InputPurpose>,
    pub summary: Option<String>,
    pub messages: Vec<Outbound>,
    pub approval: Option<NewApproval>,
    pub artifact: Option<NewArtifact>,
    pub reject_reason: Option<(ApprovalId, String)>,
    /// Action buttons the messages carry (retry, cancel, raise the cap).
    pub actions: Vec<(ButtonToken, Action)>,
    /// A non-urgent model call to queue for the next batch.
    pub batch_item: Option<NewBatchItem>,
    /// Guardrail audit rows (kind, detail) the step's decision produced:
    /// flags on its offer, a refusal. Committed with the step.
    pub guardrails: Vec<(String, String)>,
    /// FUNNEL: posts a publish step scheduled; the publisher sends them.
    pub publications: Vec<crate::store::NewPublication>,
    /// Events the step caused (`draft.approved`, `run.failed`, …),
    /// emitted in the step's transaction: (kind, payload, idempotency key).
    pub emits: Vec<(String, serde_json::Value, String)>,
    /// Messages to chats other than the run's (the owner told of a failed
    /// run started elsewhere).
    pub notices: Vec<(ChatRef, Outbound)>,
}

impl Transition {
    pub fn new(status: RunStatus) -> Self {
        Transition {
            events: Vec::new(),
            status,
            waiting_for: None,
            summary: None,
            messages: Vec::new(),
            approval: None,
            artifact: None,
            reject_reason: None,
            actions: Vec::new(),
            batch_item: None,
            guardrails: Vec::new(),
            publications: Vec::new(),
            emits: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Leaves the run runnable and writes nothing but journal events: no
    /// message, approval, artifact, audit row or event. Such a step's commit
    /// may wait for the next step's.
    pub(super) fn only_journals(&self) -> bool {
        self.status == RunStatus::Runnable
            && self.waiting_for.is_none()
            && self.summary.is_none()
            && self.messages.is_empty()
            && self.approval.is_none()
            && self.artifact.is_none()
            && self.reject_reason.is_none()
            && self.actions.is_empty()
            && self.batch_item.is_none()
            && self.guardrails.is_empty()
            && self.publications.is_empty()
            && self.emits.is_empty()
            && self.notices.is_empty()
    }

    /// This transition (one that [`only_journals`](Self::only_journals))
    /// and `next` as one: this one's events first, then everything of
    /// `next`.
    pub(super) fn followed_by(self, mut next: Transition) -> Transition {
        let mut events = self.events;
        events.append(&mut next.events);
        next.events = events;
        next
    }
}

/// What became of a step's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Committed {
    /// The claim was superseded: nothing was written.
    Refused,
    /// Written. `journal_was_seen` is true when the step's events came right
    /// after the journal it started from (nothing else was appended in
    /// between), so that journal and those events are the run's whole
    /// history and need not be read again.
    Landed { journal_was_seen: bool },
}

/// Why a press was not taken as a decision.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// Unknown token, or the approval was already decided.
    #[error("this approval is no longer open")]
    NotOpen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who acts on a waiting run: the name journaled, and the platform
/// account (the person whose next message an Edit or Reject waits for).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub user_id: &'a str,
}

impl Engine {
    /// Commits a step's outcome, all or nothing. Refused, changing nothing,
    /// when the claim was superseded (its lease lapsed and another claim
    /// took the run): the fence refuses the write and every side effect
    /// (messages, approval, artifact) is rolled back with it.
    ///
    /// `seen` is the journal's length the step started from; the answer
    /// says whether the step's events came right after it.
    pub(super) async fn commit_step(
        &self,
        claimed: &ClaimedRun,
        transition: &Transition,
        seen: usize,
    ) -> Result<Committed, StoreError> {
        let run = &claimed.run;
        let mut tx = self.inner.store.begin().await?;
        let fenced = Fenced {
            status: transition.status,
            waiting_for: transition.waiting_for,
            summary: transition.summary.as_deref(),
            lease_ms: self.inner.lease_ms,
        };
        if !tx.fence(claimed, fenced).await? {
            tx.rollback().await?;
            return Ok(Committed::Refused);
        }
        let followed = tx.append_events(run.id, &transition.events).await?;
        for message in &transition.messages {
            tx.enqueue(&run.chat, Some(run.id), message).await?;
        }
        if let Some(approval) = &transition.approval {
            tx.insert_approval(run, approval).await?;
        }
        tx.insert_actions(&transition.actions).await?;
        if let Some(item) = &transition.batch_item {
            tx.insert_batch_item(run.id, item).await?;
        }
        if let Some(artifact) = &transition.artifact {
            tx.insert_artifact(run.id, artifact).await?;
        }
        if let Some((approval_id, reason)) = &transition.reject_reason {
            tx.set_decision_reason(*approval_id, reason).await?;
        }
        for (kind, detail) in &transition.guardrails {
            tx.record_guardrail(run.id, kind, detail).await?;
        }
        for publication in &transition.publications {
            tx.insert_publication(run.id, publication).await?;
        }
        for (kind, payload, key) in &transition.emits {
            crate::store::events::emit_in(&mut tx, kind, payload.clone(), key).await?;
        }
        for (chat, message) in &transition.notices {
            tx.enqueue(chat, Some(run.id), message).await?;
        }
        tx.commit().await?;
        Ok(Committed::Landed {
            journal_was_seen: usize::try_from(followed).is_ok_and(|f| f == seen),
        })
    }

    /// A press of an approval button: the decision is recorded once, the
    /// run wakes, an Edit or Reject will take its text from the presser
    /// only, and every chat the offer went to is told how it was decided.
    pub async fn decide_in(
        &self,
        tx: &mut Tx,
        token: &ButtonToken,
        by: Actor<'_>,
    ) -> Result<Decided, DecideError> {
        let Some((decided, step)) = tx.decide_approval(token, by.name).await? else {
            return Err(DecideError::NotOpen);
        };
        let woken = tx
            .move_run(
                decided.run_id,
                RunStatus::WaitingApproval,
                RunStatus::Runnable,
                None,
            )
            .await?;
        if !woken {
            return Err(DecideError::Store(StoreError::Corrupt(format!(
                "approval {} was pending but its run was not waiting",
                decided.approval_id
            ))));
        }
        let asks_for_text = matches!(
            decided.decision,
            Decision::Edit | Decision::Reject | Decision::Revise
        );
        tx.set_input_from(decided.run_id, asks_for_text.then_some(by.user_id))
            .await?;
        let event = JournalEvent::Decided {
            step,
            approval_id: decided.approval_id,
            decision: decided.decision,
            by: by.name.to_string(),
        };
        tx.append_events(decided.run_id, &[event]).await?;
        close_offers(tx, &decided, by.name).await?;
        // AUTONOMY: an edit, revision or rejection drops a graduated flow.
        crate::autonomy::drop_back_in(tx, &self.inner.settings, &decided, by.name).await?;
        Ok(decided)
    }

    /// Hands the operator's message to the run in `chat` that waits for
    /// input from this person, journaled as `InputReceived`. Returns that
    /// run, or None when no run there waits for their input.
    pub async fn deliver_input_in(
        &self,
        tx: &mut Tx,
        chat: &ChatRef,
        text: &str,
        by: Actor<'_>,
    ) -> Result<Option<RunId>, EngineError> {
        let Some((run_id, purpose)) = tx.run_waiting_for_input(chat, by.user_id).await? else {
            return Ok(None);
        };
        let woken = tx
            .move_run(run_id, RunStatus::WaitingInput, RunStatus::Runnable, None)
            .await?;
        if !woken {
            return Ok(None);
        }
        tx.set_input_from(run_id, None).await?;
        let step = match tx.latest_request(run_id).await? {
            Some(JournalEvent::InputRequested { step, .. })
            | Some(JournalEvent::ApprovalRequested { step, .. }) => step,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "run {run_id} waits but asked for nothing"
                ))
                .into());
            }
        };
        let event = JournalEvent::InputReceived {
            step,
            purpose,
            text: text.to_string(),
            by: by.name.to_string(),
        };
        tx.append_events(run_id, &[event]).await?;
        Ok(Some(run_id))
    }

    /// Makes a failed run runnable again, journaled as `Retried` (with the
    /// tier its model steps should switch to, if any). False when the run
    /// is not failed.
    pub async fn retry_in(
        &self,
        tx: &mut Tx,
        run_id: RunId,
        by: &str,
        tier: Option<Tier>,
    ) -> Result<bool, EngineError> {
        let woken = tx
            .move_run(run_id, RunStatus::Failed, RunStatus::Runnable, None)
            .await?;
        if woken {
            let event = JournalEvent::Retried {
                by: by.to_string(),
                tier,
            };
            tx.append_events(run_id, &[event]).await?;
        }
        Ok(woken)
    }

    /// Gives up on a failed run: it completes as cancelled. False when the
    /// run is not failed.
    pub async fn cancel_in(
        &self,
        tx: &mut Tx,
        run_id: RunId,
        by: &str,
    ) -> Result<bool, EngineError> {
        let summary = format!("cancelled by {by}");
        let cancelled = tx
            .move_run(
                run_id,
                RunStatus::Failed,
                RunStatus::Completed,
                Some(&summary),
            )
            .await?;
        if cancelled {
            tx.append_events(run_id, &[JournalEvent::Completed { summary }])
                .await?;
        }
        Ok(cancelled)
    }

    /// [`Engine::retry_in`] in a transaction of its own.
    pub async fn retry(
        &self,
        run_id: RunId,
        by: &str,
        tier: Option<Tier>,
    ) -> Result<bool, EngineError> {
        let mut tx = self.inner.store.begin().await?;
        let woken = self.retry_in(&mut tx, run_id, by, tier).await?;
        tx.commit().await?;
        Ok(woken)
    }

    /// [`Engine::decide_in`] in a transaction of its own (tools, tests).
    pub async fn decide(&self, token: &ButtonToken, by: Actor<'_>) -> Result<Decided, DecideError> {
        let mut tx = self.inner.store.begin().await?;
        let decided = self.decide_in(&mut tx, token, by).await?;
        tx.commit().await?;
        Ok(decided)
    }
}

/// Queues, for every chat an offer of this approval went to, a message
/// saying how it was decided; chat adapters edit the offer with it and drop
/// its buttons.
async fn close_offers(tx: &mut Tx, decided: &Decided, by: &str) -> Result<(), StoreError> {
    // A renamed button reads as its own word: "Decline: chosen by Maya."
    let text = match decided.label.as_deref() {
        Some(word) if word != decided.decision.label() => format!("{word}: chosen by {by}."),
        _ => format!("{} by {by}.", decided.decision.past_tense()),
    };
    for chat in tx.offer_chats(decided.approval_id).await? {
        let message =
            Outbound::text(text.clone()).linked_to(decided.approval_id, ApprovalRole::Closed);
        tx.enqueue(&chat, Some(decided.run_id), &message).await?;
    }
    Ok(())
}

//! POLICY HOOKS in the engine: the origin of a run's text, flags on an
//! approval offer, and the refusal of a step whose effect needs an
//! approval the journal does not have. The rules live in `crate::policy`.

use super::Engine;
use super::state::RunState;
use super::steps::failed;
use super::transitions::Transition;
use crate::domain::RunId;
use crate::engine::{EngineError, StartRun};
use crate::flows::{Flow, StepDef, Tier};
use crate::policy::review::{self, FastReview, ReviewOf};
use crate::policy::{Origin, Source, classifier, effects};
use crate::store::{RunRow, Tx};

impl Engine {
    /// Starts a run whose request came from `origin`; text that is not
    /// the operator's is recorded as such, so every prompt quotes it as
    /// data and its approval warns when it tries to instruct.
    pub async fn start_with_origin(
        &self,
        start: StartRun,
        origin: Origin,
    ) -> Result<RunId, EngineError> {
        let mut tx = self.inner.store.begin().await?;
        let id = self.start_with_origin_in(&mut tx, start, origin).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// [`Engine::start_with_origin`] inside a caller's transaction: the run
    /// and its origin commit together (a crash between the two would leave
    /// forwarded text looking like the operator's), and with whatever else
    /// the caller writes (the update marked handled).
    pub async fn start_with_origin_in(
        &self,
        tx: &mut Tx,
        start: StartRun,
        origin: Origin,
    ) -> Result<RunId, EngineError> {
        let (id, created) = self.create_in(tx, start).await?;
        if created {
            if !origin.is_trusted() {
                tx.record_guardrail(id, "origin", origin.as_str()).await?;
            }
            // Known now: the run's steps need not read it back. (Should the
            // transaction roll back, the id, new and random, is never used.)
            self.inner.origins.insert(id, origin).await;
        }
        Ok(id)
    }

    /// Where the run's request came from. When the store cannot say, the
    /// text is treated as untrusted: quoting it costs nothing.
    pub(super) async fn run_origin(&self, run_id: RunId) -> Origin {
        if let Some(origin) = self.inner.origins.get(&run_id).await {
            return origin;
        }
        match self.inner.store.guardrails_for_run(run_id).await {
            Ok(events) => {
                let origin = events
                    .iter()
                    .find(|e| e.kind == "origin")
                    .and_then(|e| e.detail.parse().ok())
                    .unwrap_or(Origin::Operator);
                self.inner.origins.insert(run_id, origin).await;
                origin
            }
            Err(error) => {
                tracing::warn!(error = ?error, "run origin unknown; quoting the request as data");
                Origin::Forwarded
            }
        }
    }

    /// Puts the guardrails' flags above the draft on its approval message
    /// (the draft itself is not changed); each flag is an audit row
    /// committed with the offer. The request and the knowledge the run
    /// retrieved are both scanned for instructions (by the patterns, and by
    /// the router-tier classifier when it is on); a fast-tier review
    /// journaled with the draft adds its findings and a one-line verdict.
    pub(super) async fn guard_offer(
        &self,
        run: &RunRow,
        state: &RunState,
        draft_from: &str,
        transition: &mut Transition,
    ) {
        let Some(draft) = transition.approval.as_ref().map(|a| a.draft.clone()) else {
            return;
        };
        let origin = self.run_origin(run.id).await;
        let mut sources = vec![Source::request(origin, &state.input.request)];
        sources.extend(
            retrieved_texts(state)
                .into_iter()
                .map(|text| Source::retrieved(Origin::Knowledge, text)),
        );
        let guard = &self.inner.guard;
        let mut review = guard.review(&sources, &draft);
        let draft_output = state.outputs.get(draft_from);
        crate::offers::step::own_price_flags(&mut review, draft_output, &draft);
        if guard.classifier_on() {
            let step = approving_step(state, transition);
            let of = ReviewOf {
                run_id: run.id,
                flow: &state.flow,
                step: &step,
            };
            // Verdicts the run already paid for (an edited draft offered
            // again); unreadable, the texts are classified again.
            let earlier: Vec<(String, String)> =
                match self.inner.store.guardrails_for_run(run.id).await {
                    Ok(rows) => rows.into_iter().map(|g| (g.kind, g.detail)).collect(),
                    Err(error) => {
                        tracing::warn!(error = ?error, "earlier classifier verdicts unknown");
                        Vec::new()
                    }
                };
            let verdicts = classifier::classify_unflagged(
                &self.inner.agents,
                &sources,
                &earlier,
                &mut review,
                of,
            )
            .await;
            transition.guardrails.extend(verdicts);
        }
        let fast = fast_review_of(state, &draft);
        if let Some(fast) = &fast {
            review.flags.extend(fast.flags());
            if let Some(reason) = &fast.skipped {
                transition
                    .guardrails
                    .push(("review_skipped".into(), reason.clone()));
            }
        }
        let note = fast.map(|f| format!("{}\n", f.note())).unwrap_or_default();
        if review.is_clean() && note.is_empty() {
            return;
        }
        if let Some(approval) = transition.approval.as_mut() {
            approval.message.text = format!("{}{note}\n{}", review.banner(), approval.message.text);
        }
        for flag in &review.flags {
            let detail = format!("{}: {}", flag.kind.as_str(), flag.detail);
            transition.guardrails.push(("flagged".into(), detail));
        }
    }

    /// POLICY HOOK: after a quality-tier draft in a high-quality flow, the
    /// fast tier reviews it; the review goes into the step's output, so it
    /// is committed (and paid for) with the draft.
    pub(super) async fn review_draft(
        &self,
        run: &RunRow,
        flow: &Flow,
        step: &StepDef,
        tier: Tier,
        output: &mut serde_json::Value,
    ) {
        let settings = &self.inner.settings;
        if !review::applies(settings, flow.cost_label, tier) {
            return;
        }
        let draft = output["text"].as_str().unwrap_or_default().to_string();
        let of = ReviewOf {
            run_id: run.id,
            flow: &flow.name,
            step: &step.name,
        };
        let fast = review::fast_review(&self.inner.agents, settings, &draft, of).await;
        output["review"] = serde_json::to_value(fast).unwrap_or_default();
    }

    /// A failed transition when `step` has an effect that needs an
    /// approval and the journal holds no approve decision.
    pub(super) async fn refuse_unapproved(
        &self,
        run: &RunRow,
        step: &StepDef,
    ) -> Option<Transition> {
        let required = self.inner.guard.required();
        let declared = effects::step_effects(step).ok()?;
        if declared.is_disjoint(required) {
            return None;
        }
        let journal = match self.inner.store.journal(run.id).await {
            Ok(journal) => journal,
            Err(error) => {
                let error = format!("the journal could not be read ({error})");
                return Some(failed(run, &step.name, error, "Retry in a moment."));
            }
        };
        let effect = effects::missing_approval(step, required, &journal)?;
        let detail = format!(
            "step '{}' ({effect}) refused: no approval decision",
            step.name
        );
        let mut refused = failed(
            run,
            &step.name,
            format!("policy requires an approval before {effect}, and none was given"),
            "Add an approve step before it in the flow file.",
        );
        refused.guardrails.push(("blocked".into(), detail));
        Some(refused)
    }
}

/// The knowledge chunks the run's retrieve steps returned (their raw text,
/// as ingested), for the injection detector.
fn retrieved_texts(state: &RunState) -> Vec<&str> {
    state
        .outputs
        .values()
        .filter_map(|output| output.get("chunks").and_then(|c| c.as_array()))
        .flatten()
        .filter_map(|chunk| chunk.get("text").and_then(|t| t.as_str()))
        .collect()
}

/// The fast-tier review of the draft being offered: the one journaled with
/// the step output whose text it is (an edited draft has none).
fn fast_review_of(state: &RunState, draft: &str) -> Option<FastReview> {
    state
        .outputs
        .values()
        .filter(|output| output.get("text").and_then(|t| t.as_str()) == Some(draft))
        .find_map(FastReview::from_output)
}

/// The approve step offering this transition's draft, for the ledger rows
/// of the calls made while offering it.
fn approving_step(state: &RunState, transition: &Transition) -> String {
    transition
        .events
        .iter()
        .find_map(|event| match event {
            crate::domain::JournalEvent::ApprovalRequested { step, .. } => Some(step.clone()),
            _ => None,
        })
        .unwrap_or_else(|| state.flow.clone())
}

//! POLICY HOOKS in the engine: the origin of a run's text, flags on an
//! approval offer, and the refusal of a step whose effect needs an
//! approval the journal does not have. The rules live in `crate::policy`.

use super::Engine;
use super::state::RunState;
use super::steps::failed;
use super::transitions::Transition;
use crate::domain::RunId;
use crate::engine::{EngineError, StartRun};
use crate::flows::StepDef;
use crate::policy::{Origin, Source, effects};
use crate::store::RunRow;

impl Engine {
    /// Starts a run whose request came from `origin`; text that is not
    /// the operator's is recorded as such, so every prompt quotes it as
    /// data and its approval warns when it tries to instruct.
    pub async fn start_with_origin(
        &self,
        start: StartRun,
        origin: Origin,
    ) -> Result<RunId, EngineError> {
        let id = self.start(start).await?;
        if !origin.is_trusted() {
            self.inner
                .store
                .record_guardrail(Some(id), "origin", origin.as_str())
                .await?;
        }
        Ok(id)
    }

    /// Where the run's request came from. When the store cannot say, the
    /// text is treated as untrusted: quoting it costs nothing.
    pub(super) async fn run_origin(&self, run_id: RunId) -> Origin {
        match self.inner.store.guardrails_for_run(run_id).await {
            Ok(events) => events
                .iter()
                .find(|e| e.kind == "origin")
                .and_then(|e| e.detail.parse().ok())
                .unwrap_or(Origin::Operator),
            Err(error) => {
                tracing::warn!(error = ?error, "run origin unknown; quoting the request as data");
                Origin::Forwarded
            }
        }
    }

    /// Puts the guardrails' flags above the draft on its approval message
    /// (the draft itself is not changed); each flag is an audit row
    /// committed with the offer. The request and the knowledge the run
    /// retrieved are both scanned for instructions.
    pub(super) async fn guard_offer(
        &self,
        run: &RunRow,
        state: &RunState,
        draft_from: &str,
        transition: &mut Transition,
    ) {
        let Some(approval) = transition.approval.as_mut() else {
            return;
        };
        let origin = self.run_origin(run.id).await;
        let mut sources = vec![Source::request(origin, &state.input.request)];
        sources.extend(
            retrieved_texts(state)
                .into_iter()
                .map(|text| Source::retrieved(Origin::Knowledge, text)),
        );
        let mut review = self.inner.guard.review(&sources, &approval.draft);
        let draft_output = state.outputs.get(draft_from);
        crate::offers::step::own_price_flags(&mut review, draft_output, &approval.draft);
        if review.is_clean() {
            return;
        }
        approval.message.text = format!("{}\n{}", review.banner(), approval.message.text);
        for flag in &review.flags {
            let detail = format!("{}: {}", flag.kind.as_str(), flag.detail);
            transition.guardrails.push(("flagged".into(), detail));
        }
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

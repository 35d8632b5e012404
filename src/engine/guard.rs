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
use crate::policy::{Origin, effects};
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
    /// (the draft itself is not changed) and audits each.
    pub(super) async fn guard_offer(
        &self,
        run: &RunRow,
        state: &RunState,
        transition: &mut Transition,
    ) {
        let Some(approval) = transition.approval.as_mut() else {
            return;
        };
        let origin = self.run_origin(run.id).await;
        let review = self
            .inner
            .guard
            .review(origin, &state.input.request, &approval.draft);
        if review.is_clean() {
            return;
        }
        approval.message.text = format!("{}\n{}", review.banner(), approval.message.text);
        for flag in &review.flags {
            let detail = format!("{}: {}", flag.kind.as_str(), flag.detail);
            if let Err(error) = self
                .inner
                .store
                .record_guardrail(Some(run.id), "flagged", &detail)
                .await
            {
                tracing::warn!(error = ?error, "guardrail audit row not written");
            }
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
        if let Err(error) = self
            .inner
            .store
            .record_guardrail(Some(run.id), "blocked", &detail)
            .await
        {
            tracing::warn!(error = ?error, "guardrail audit row not written");
        }
        Some(failed(
            run,
            &step.name,
            format!("policy requires an approval before {effect}, and none was given"),
            "Add an approve step before it in the flow file.",
        ))
    }
}

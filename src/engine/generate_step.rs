//! The generate step: a model call (or a batch's answer) turned into the
//! step's output, and what the operator can do when the call fails
//! (raise the cap, retry, switch tier, cancel).

use serde_json::json;

use super::Engine;
use super::state::RunState;
use super::steps::{completed, failed, queued};
use super::transitions::Transition;
use crate::agents::{ModelCall, ModelError};
use crate::domain::{Action, JournalEvent, action_buttons};
use crate::flows::{Flow, StepDef, Tier};
use crate::store::RunRow;

impl Engine {
    /// A generate step: a finished batch answer when one is in the
    /// journal; otherwise the prompt is rendered and the call is queued
    /// for a batch (not urgent, and the provider has a batch API) or made
    /// now. A failed call stops the run with buttons to go on.
    pub(super) async fn generate(
        &self,
        run: &RunRow,
        flow: &Flow,
        step: &StepDef,
        state: &RunState,
        call: GenerateCall<'_>,
    ) -> Transition {
        if !call.urgent {
            match state.conversation(&step.name).latest {
                Some(JournalEvent::BatchFinished {
                    output: Some(output),
                    ..
                }) => {
                    // POLICY HOOK: the batch answer carries placeholders;
                    // a high-quality draft gets its fast-tier review.
                    let mut output = self.restore_batch(run, state, &call, output).await;
                    let tier = state.tier_override.unwrap_or(call.tier);
                    self.review_draft(run, flow, step, tier, &mut output).await;
                    return answered(run, step, output, call.outcomes);
                }
                Some(JournalEvent::BatchFinished {
                    error: Some(error), ..
                }) => {
                    let error = format!("the batch call failed: {error}");
                    let mut transition = failed(run, &step.name, error, "Retry queues it again.");
                    let ways = WaysOut {
                        raise_cap: false,
                        switch_to: None,
                    };
                    self.offer_ways_out(&mut transition, run, ways);
                    return transition;
                }
                _ => {}
            }
        }
        let values = self.prompt_values(run, state).await;
        let prompts = &self.inner.prompts;
        let rendered = prompts
            .render(call.system, &values)
            .and_then(|system| Ok((system, prompts.render(call.prompt, &values)?)));
        let (system, prompt) = match rendered {
            Ok(pair) => pair,
            Err(error) => {
                return failed(run, &step.name, error.to_string(), "Fix the prompt file.");
            }
        };
        let model_call = ModelCall {
            tier: state.tier_override.unwrap_or(call.tier),
            label: flow.cost_label,
            system,
            prompt,
            max_tokens: call.max_tokens,
            temperature: call.temperature,
            run_id: Some(run.id),
            flow: Some(flow.name.clone()),
            step: Some(step.name.clone()),
            reply_schema: None,
            redacted_items: 0,
        };
        if !call.urgent {
            match self
                .inner
                .agents
                .queue_for_batch(&model_call, &step.name)
                .await
            {
                Ok(Some(item)) => return queued(run, step, item),
                // This provider has no batch API: call it now.
                Ok(None) => {}
                Err(error) => return self.model_failure(run, step, &error, model_call.tier),
            }
        }
        match self.inner.agents.complete(&model_call).await {
            Ok(completion) => {
                let mut output = json!({
                    "text": completion.text.trim(),
                    "model": completion.model,
                    "tier": completion.tier,
                    "input_tokens": completion.input_tokens,
                    "output_tokens": completion.output_tokens,
                    "cache_hit": completion.cache_hit,
                });
                // POLICY HOOK: a high-quality draft's fast-tier review,
                // journaled with the draft.
                self.review_draft(run, flow, step, model_call.tier, &mut output)
                    .await;
                answered(run, step, output, call.outcomes)
            }
            Err(error) => self.model_failure(run, step, &error, model_call.tier),
        }
    }

    /// POLICY HOOK: a batch answer with the personal data its request had
    /// replaced put back. Redaction is deterministic, so rendering the same
    /// prompts again gives the same placeholders.
    async fn restore_batch(
        &self,
        run: &RunRow,
        state: &RunState,
        call: &GenerateCall<'_>,
        mut output: serde_json::Value,
    ) -> serde_json::Value {
        let values = self.prompt_values(run, state).await;
        let prompts = &self.inner.prompts;
        let rendered = (
            prompts.render(call.system, &values),
            prompts.render(call.prompt, &values),
        );
        if let (Ok(system), Ok(prompt), Some(text)) = (
            rendered.0,
            rendered.1,
            output.get("text").and_then(|t| t.as_str()),
        ) {
            let restored = self.inner.agents.restore_redacted(&system, &prompt, text);
            output["text"] = restored.into();
        }
        output
    }

    /// The run stops, saying what failed, with buttons to go on.
    pub(super) fn model_failure(
        &self,
        run: &RunRow,
        step: &StepDef,
        error: &ModelError,
        tier: Tier,
    ) -> Transition {
        tracing::warn!(error = ?error, "model step failed");
        let mut transition = failed(run, &step.name, error.to_string(), error.advice());
        if let ModelError::Blocked(refusal) = error {
            let payload = json!({
                "run_id": run.id,
                "flow": run.flow,
                "step": step.name,
                "cap": refusal.which,
                "needed_usd": refusal.needed_usd,
                "reason": error.to_string(),
            });
            // One event per blocked attempt: the key is new each time, and
            // the step's fenced commit writes it at most once.
            let key = format!(
                "budget.blocked:{}:{}",
                run.id,
                uuid::Uuid::new_v4().simple()
            );
            transition
                .emits
                .push(("budget.blocked".into(), payload, key));
        }
        if let Some(ways) = WaysOut::after(error, tier) {
            self.offer_ways_out(&mut transition, run, ways);
        }
        transition
    }
}

impl Engine {
    /// Buttons on a failed model step's message: raise today's cap (when
    /// the budget stopped it), retry, switch to the fast tier (when a
    /// provider failed), cancel.
    fn offer_ways_out(&self, transition: &mut Transition, run: &RunRow, ways: WaysOut) {
        let mut actions = Vec::new();
        if ways.raise_cap {
            let (day, _) = self.inner.agents.budget().periods();
            let amount = self.inner.settings.policy.daily_budget_usd;
            actions.push((
                format!("Raise today's cap by ${amount:.2} once"),
                Action::RaiseDailyCap {
                    day,
                    amount_usd: amount,
                },
            ));
        }
        actions.push((
            "Retry".into(),
            Action::RetryRun {
                run_id: run.id,
                tier: None,
            },
        ));
        if let Some(cheaper) = ways.switch_to {
            actions.push((
                format!("Switch to the {cheaper} tier"),
                Action::RetryRun {
                    run_id: run.id,
                    tier: Some(cheaper),
                },
            ));
        }
        actions.push(("Cancel".into(), Action::CancelRun { run_id: run.id }));
        let (buttons, tokens) = action_buttons(actions);
        transition.actions.extend(tokens);
        if let Some(message) = transition.messages.last_mut() {
            message.buttons = buttons;
        }
    }
}

/// The buttons a stopped model step offers besides Retry and Cancel.
struct WaysOut {
    raise_cap: bool,
    switch_to: Option<Tier>,
}

impl WaysOut {
    /// None when there is nothing to press (no model configured).
    fn after(error: &ModelError, tier: Tier) -> Option<WaysOut> {
        match error {
            ModelError::NotConfigured => None,
            ModelError::Blocked(_) => Some(WaysOut {
                raise_cap: true,
                switch_to: None,
            }),
            ModelError::Exhausted { .. } => Some(WaysOut {
                raise_cap: false,
                switch_to: tier.cheaper(),
            }),
            ModelError::Ledger(_) => Some(WaysOut {
                raise_cap: false,
                switch_to: None,
            }),
        }
    }
}

/// What a generate step asks of the model, read from its definition.
pub(super) struct GenerateCall<'a> {
    pub tier: Tier,
    pub system: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u64,
    pub temperature: Option<f64>,
    pub urgent: bool,
    pub outcomes: &'a [String],
}

/// A model step's answer. A step that declares `outcomes` completes with
/// the one the answer names as its `"outcome"` (for `next` to branch on);
/// an answer that names none fails the step, since guessing a branch could
/// send the run somewhere nobody chose.
fn answered(
    run: &RunRow,
    step: &StepDef,
    mut output: serde_json::Value,
    outcomes: &[String],
) -> Transition {
    if outcomes.is_empty() {
        return completed(&step.name, output);
    }
    let text = output
        .get("text")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    match pick_outcome(text, outcomes) {
        Some(outcome) => {
            output["outcome"] = outcome.into();
            completed(&step.name, output)
        }
        None => failed(
            run,
            &step.name,
            format!(
                "the model answered '{}', which is none of: {}",
                crate::domain::clip(text, 60),
                outcomes.join(", ")
            ),
            "Check the step's prompt asks for one of them.",
        ),
    }
}

/// The outcome a model's answer names: the whole answer, or its first
/// word, compared without case or punctuation.
fn pick_outcome(text: &str, outcomes: &[String]) -> Option<String> {
    let clean = |s: &str| {
        s.trim()
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let whole = clean(text);
    let first = text
        .split_whitespace()
        .next()
        .map(clean)
        .unwrap_or_default();
    outcomes
        .iter()
        .find(|o| clean(o) == whole || clean(o) == first)
        .cloned()
}

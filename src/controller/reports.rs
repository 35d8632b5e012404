//! The reports a command asks for: recent runs, one run, the approvals
//! waiting. They read; they change nothing.

use std::fmt::Write;

use super::{Controller, ControllerError, Handled};
use crate::domain::{ApprovalRole, Inbound, JournalEvent, Outbound, clip};
use crate::engine::{EngineError, RunState};
use crate::store::RunRow;

impl Controller {
    pub(super) async fn list_runs(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        let runs = self.store.recent_runs(10).await?;
        if runs.is_empty() {
            return Ok(Handled::reply("No runs yet. Start one with /draft …"));
        }
        let mut text = String::from("Recent runs:");
        for run in runs {
            let _ = write!(
                text,
                "\n{}  {}  {}  {}",
                run.id.short(),
                run.flow,
                run.status,
                clip(&run.input.request, 50)
            );
        }
        Ok(Handled::reply(text))
    }

    pub(super) async fn show_run(
        &self,
        _inbound: &Inbound,
        id: &str,
    ) -> Result<Handled, ControllerError> {
        let run = match self.find_run(id).await? {
            Ok(run) => run,
            Err(message) => return Ok(Handled::reply(message)),
        };
        let events = self.store.journal(run.id).await?;
        let state = RunState::fold(&events).map_err(EngineError::from)?;
        let ledger = self.store.ledger_for_run(run.id).await?;
        // A fold from +0.0: a float `sum` of nothing is -0.0 ("$-0.0000").
        let cost: f64 = ledger
            .iter()
            .filter_map(|e| e.cost_usd)
            .fold(0.0, |total, c| total + c);
        let tokens: i64 = ledger
            .iter()
            .map(|e| e.input_tokens + e.output_tokens)
            .sum();
        let done = steps_in_order(&events);
        let mut text = format!(
            "Run {} ({}): {}\nRequest: {}\nSteps done: {}\nModel calls: {}, {} tokens, ${:.4}",
            run.id.short(),
            run.flow,
            run.status,
            clip(&run.input.request, 200),
            if done.is_empty() {
                "none".to_string()
            } else {
                done.join(", ")
            },
            ledger.len(),
            tokens,
            cost,
        );
        if let Some(event) = &state.input.event {
            let _ = write!(
                text,
                "\nStarted by event {} ({})",
                event["kind"].as_str().unwrap_or("?"),
                event["id"].as_str().unwrap_or("?")
            );
        }
        if let Some(retrieval) = crate::memory::retrieval_line(&state.outputs) {
            let _ = write!(text, "\nRetrieved: {retrieval}");
        }
        // AUTONOMY: who made each decision (a person, or autonomy).
        text.push_str(&crate::autonomy::decision_lines(&events));
        if let Some(summary) = &state.summary {
            let _ = write!(text, "\nOutcome: {summary}");
        }
        if let Some(error) = &state.error {
            let _ = write!(text, "\nError: {error}");
        }
        // POLICY HOOK: the run's guardrail decisions.
        text.push_str(&super::policy_hooks::run_lines(&self.engine, run.id).await?);
        Ok(Handled::reply(text))
    }

    pub(super) async fn list_approvals(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        let approvals = self.store.pending_approvals().await?;
        if approvals.is_empty() {
            return Ok(Handled::reply("No approvals are waiting."));
        }
        let replies = approvals
            .into_iter()
            .map(|a| {
                Outbound::text(format!(
                    "Waiting for your decision (run {}):\n\n{}",
                    a.run_id.short(),
                    a.draft
                ))
                .with_buttons(a.buttons)
                .linked_to(a.id, ApprovalRole::Offer)
            })
            .collect();
        Ok(Handled::replies(replies))
    }

    /// The run a person means by a (short) id, or a sentence saying why
    /// there is none.
    pub(super) async fn find_run(
        &self,
        id: &str,
    ) -> Result<Result<RunRow, String>, ControllerError> {
        let id = id.trim();
        if id.len() < 4 {
            return Ok(Err(
                "Give me a run id (at least its first 4 characters); /runs lists them.".into(),
            ));
        }
        let mut matches = self.store.runs_with_prefix(id).await?;
        Ok(match matches.len() {
            0 => Err(format!(
                "No run starts with '{}'. /runs lists recent ones.",
                clip(id, 40)
            )),
            1 => Ok(matches.remove(0)),
            _ => Err(format!(
                "Several runs start with '{}'; give more of the id.",
                clip(id, 40)
            )),
        })
    }
}

/// The steps that completed, in the order the journal has them.
fn steps_in_order(events: &[JournalEvent]) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    for event in events {
        if let JournalEvent::StepCompleted { step, .. } = event
            && !done.contains(step)
        {
            done.push(step.clone());
        }
    }
    done
}

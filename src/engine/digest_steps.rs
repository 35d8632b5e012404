//! The digest step kinds (`config/flows/digest.toml`):
//!
//! - `digest_numbers`: every number, SQL aggregates for the local day
//!   before the run's time (a schedule's tick, or now); never a model;
//! - `digest_render`: a template (`prompts/digest.md`) rendered with them;
//! - `digest_summary`: the optional one-paragraph summary by the fast tier
//!   (label `low-cost`), or one sentence saying why there is none;
//! - `digest_deliver`: the text with the PNG chart and each open approval
//!   with its buttons, to the owner's chats for a scheduled run, to the
//!   asking chat for `/digest`.
//!
//! The numbers are journaled with the step, so a run resumed after a crash
//! renders and sends what it computed, and its messages are queued in the
//! deliver step's transaction: a digest run sends once.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::Engine;
use super::state::RunState;
use super::steps::{completed, failed};
use super::transitions::Transition;
use crate::digest;
use crate::domain::{ChatRef, Outbound};
use crate::flows::StepDef;
use crate::store::RunRow;

impl Engine {
    /// `digest_numbers`: the numbers of the day before the run's time.
    pub(super) async fn digest_numbers(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
    ) -> Transition {
        let inner = &self.inner;
        let at = match digest::requested_time(&state.input.request) {
            Some(at) => Ok(at),
            None => {
                crate::scheduler::Clock::now(&crate::scheduler::DatabaseClock(inner.store.clone()))
                    .await
                    .map_err(digest::DigestError::from)
            }
        };
        let numbers = match at {
            Ok(at) => match digest::timezone(&inner.settings) {
                Ok(zone) => digest::numbers(&inner.store, &inner.settings, zone, at)
                    .await
                    .map(|numbers| (at, numbers))
                    .map_err(digest::DigestError::from),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match numbers {
            Ok((at, numbers)) => completed(
                &step.name,
                json!({ "at": at.timestamp_millis(), "numbers": numbers }),
            ),
            Err(error) => digest_failed(run, step, &error),
        }
    }

    /// `digest_render`: `template` rendered with the numbers of `from`.
    pub(super) fn digest_render(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
        template: &str,
        from: &str,
    ) -> Transition {
        let numbers = state
            .outputs
            .get(from)
            .and_then(|o| o.get("numbers"))
            .cloned()
            .unwrap_or(Value::Null);
        match self.inner.prompts.render(template, &numbers) {
            Ok(text) => completed(&step.name, json!({ "text": text.trim() })),
            Err(error) => {
                tracing::error!(error = ?error, "the digest template failed");
                failed(
                    run,
                    &step.name,
                    error.to_string(),
                    "Fix the template (prompts/digest.md in your home, or remove your copy).",
                )
            }
        }
    }

    /// `digest_summary`: the text of `text_from` with the fast tier's
    /// paragraph under its title (when `digest.summary` is on), or with a
    /// sentence saying why there is none.
    pub(super) async fn digest_summary(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
        text_from: &str,
    ) -> Transition {
        let inner = &self.inner;
        let text = text_of(state, text_from);
        let summarized = digest::summary::summarize(
            &inner.agents,
            &inner.settings,
            &text,
            Some(run.id),
            &step.name,
        )
        .await;
        completed(&step.name, json!({ "text": summarized }))
    }

    /// `digest_deliver`: the text of `text_from` with the chart of the
    /// numbers' day, then each open approval with its buttons.
    pub(super) async fn digest_deliver(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
        text_from: &str,
        numbers_from: &str,
    ) -> Transition {
        let inner = &self.inner;
        let numbers = state.outputs.get(numbers_from);
        let at = numbers
            .and_then(|o| o.get("at"))
            .and_then(Value::as_i64)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or_else(Utc::now);
        let date = numbers
            .and_then(|o| o.pointer("/numbers/date"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let parts = self.digest_parts(at).await;
        let (chart, approvals) = match parts {
            Ok(parts) => parts,
            Err(error) => return digest_failed(run, step, &error),
        };
        let messages = digest::messages(&text_of(state, text_from), &date, &chart, &approvals);
        let scheduled = crate::scheduler::started_by_schedule(&state.input.requested_by);
        if !scheduled {
            let mut transition = completed(&step.name, json!({ "to": "the asking chat" }));
            transition.messages = messages;
            return transition;
        }
        // Where it goes: the owner's chats (a Discord DM channel asked of
        // Discord). Discord out of reach fails the step: /retry sends it.
        let chats = match digest::owner_chats_now(&inner.settings).await {
            Ok(chats) => chats,
            Err(error) => {
                return failed(
                    run,
                    &step.name,
                    format!("the owner's Discord DM could not be opened ({error})"),
                    "Check that Discord is reachable.",
                );
            }
        };
        if chats.is_empty() {
            tracing::warn!(run = %run.id, "the digest has nowhere to go: set owner.telegram_user_id, owner.discord_user_id or digest.chats");
        }
        let mut transition = completed(&step.name, json!({ "to": chat_names(&chats) }));
        transition.notices = chats
            .iter()
            .flat_map(|chat| messages.iter().map(move |m| (chat.clone(), m.clone())))
            .collect();
        transition
    }

    /// The chart of the days before `at`, and the open approvals.
    async fn digest_parts(
        &self,
        at: DateTime<Utc>,
    ) -> Result<(Vec<u8>, Vec<Outbound>), digest::DigestError> {
        let inner = &self.inner;
        let chart = digest::chart_png(&inner.store, &inner.settings, at).await?;
        let mut approvals = digest::open_approvals(&inner.store).await?;
        // AUTONOMY: graduation proposals (Yes / Not yet) go out after the
        // open approvals, to every chat the digest reaches.
        let proposals = crate::autonomy::digest_proposals(&inner.store, &inner.settings).await?;
        approvals.extend(proposals);
        Ok((chart, approvals))
    }
}

fn text_of(state: &RunState, step: &str) -> String {
    state
        .outputs
        .get(step)
        .and_then(|o| o.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn chat_names(chats: &[ChatRef]) -> Vec<String> {
    chats
        .iter()
        .map(|c| format!("{}:{}", c.platform, c.chat_id))
        .collect()
}

fn digest_failed(run: &RunRow, step: &StepDef, error: &digest::DigestError) -> Transition {
    tracing::error!(error = ?error, "a digest step failed");
    failed(
        run,
        &step.name,
        error.to_string(),
        "The log has the details.",
    )
}

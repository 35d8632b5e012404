//! The lead step kinds' I/O: `extract` (a model call with structured
//! output over the quoted lead), `enrich` (memory and the lead's website,
//! both quoted as untrusted), `score` (deterministic rules; records the
//! tier on the lead), `email` (queues an approved draft to the lead, once)
//! and `lead_status`. The pure halves are in [`crate::leads::steps`].
//!
//! Like `retrieve`, `score`, `email` and `lead_status` write outside the
//! step's transaction, idempotently: the lead's tier and status are set to
//! the same values however often the step runs, and an e-mail is queued
//! once per (run, step) key.

use serde_json::{Value, json};

use super::Engine;
use super::state::RunState;
use super::steps::{completed, failed};
use super::transitions::Transition;
use crate::agents::ModelCall;
use crate::email::{EmailMessage, queue};
use crate::flows::{Flow, StepDef, StepKind};
pub(super) use crate::leads::steps::quoted_lead;
use crate::leads::steps::{extract_schema, lead_id, lead_of, read_extraction, score_output};
use crate::leads::{Extracted, LeadStatus, Leads};
use crate::memory::fetch::{FetchLimits, fetch, is_public};
use crate::policy::{Origin, quote};
use crate::store::RunRow;

/// A fetched website is cut to this many characters before a prompt sees it.
const WEBSITE_CHARS: usize = 3000;

impl Engine {
    pub(super) async fn lead_step(
        &self,
        run: &RunRow,
        flow: &Flow,
        step: &StepDef,
        state: &RunState,
    ) -> Transition {
        let Some(lead) = run_lead(state) else {
            return failed(
                run,
                &step.name,
                "this run has no lead".into(),
                "Lead steps run in a flow started by lead.received (or /lead).",
            );
        };
        match &step.kind {
            StepKind::Extract {
                tier,
                system,
                prompt,
                max_tokens,
            } => {
                self.extract(
                    run,
                    flow,
                    step,
                    state,
                    &lead,
                    (*tier, system, prompt, *max_tokens),
                )
                .await
            }
            StepKind::Enrich { top_k } => self.enrich(run, step, &lead, *top_k).await,
            StepKind::Score { from } => self.score_lead(run, step, state, &lead, from).await,
            StepKind::Email {
                draft_from,
                subject,
                status,
            } => {
                self.email_lead(
                    run,
                    step,
                    state,
                    &lead,
                    (draft_from, subject, status.as_deref()),
                )
                .await
            }
            StepKind::LeadStatus { status } => self.set_lead_status(run, step, &lead, status).await,
            _ => failed(run, &step.name, "not a lead step".into(), ""),
        }
    }

    async fn extract(
        &self,
        run: &RunRow,
        flow: &Flow,
        step: &StepDef,
        state: &RunState,
        lead: &Value,
        (tier, system, prompt, max_tokens): (crate::flows::Tier, &str, &str, u64),
    ) -> Transition {
        let values = self.prompt_values(run, state).await;
        let prompts = &self.inner.prompts;
        let rendered = prompts
            .render(system, &values)
            .and_then(|s| Ok((s, prompts.render(prompt, &values)?)));
        let (system, prompt) = match rendered {
            Ok(pair) => pair,
            Err(error) => {
                return failed(run, &step.name, error.to_string(), "Fix the prompt file.");
            }
        };
        let call = ModelCall {
            tier: state.tier_override.unwrap_or(tier),
            label: flow.cost_label,
            system,
            prompt,
            max_tokens,
            temperature: Some(0.0),
            run_id: Some(run.id),
            flow: Some(flow.name.clone()),
            step: Some(step.name.clone()),
            reply_schema: Some(extract_schema()),
            redacted_items: 0,
        };
        match self.inner.agents.complete(&call).await {
            Ok(completion) => {
                let fields = read_extraction(&completion.text, lead);
                completed(
                    &step.name,
                    json!({ "fields": fields, "model": completion.model, "tier": completion.tier }),
                )
            }
            Err(error) => self.model_failure(run, step, &error, call.tier),
        }
    }

    async fn enrich(
        &self,
        run: &RunRow,
        step: &StepDef,
        lead: &Value,
        top_k: Option<usize>,
    ) -> Transition {
        let settings = &self.inner.settings.memory;
        let memory = crate::memory::Memory::new(self.inner.store.clone(), settings.clone());
        let text = |k: &str| lead.get(k).and_then(Value::as_str).unwrap_or_default();
        let query = format!("{} {} {}", text("company"), text("name"), text("message"));
        let k = top_k.unwrap_or(settings.top_k);
        let mut output = match memory.recall(&query, &run.chat, k).await {
            Ok(recall) => {
                let found = recall.to_json();
                json!({ "quoted": found.get("quoted"), "sources": found.get("sources") })
            }
            Err(error) => {
                tracing::warn!(error = ?error, "lead enrichment: retrieval failed");
                json!({ "quoted": "", "sources": "" })
            }
        };
        output["website"] = match text("website") {
            "" => Value::Null,
            url => website(url).await.into(),
        };
        completed(&step.name, output)
    }

    async fn score_lead(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
        lead: &Value,
        from: &str,
    ) -> Transition {
        let fields: Extracted = state
            .outputs
            .get(from)
            .and_then(|o| o.get("fields"))
            .and_then(|f| serde_json::from_value(f.clone()).ok())
            .unwrap_or_default();
        let (output, scored) = score_output(&fields, &self.inner.settings.leads.criteria);
        if let Some(id) = lead_id(lead)
            && let Err(error) = Leads(&self.inner.store).set_score(id, &scored).await
        {
            return failed(
                run,
                &step.name,
                error.to_string(),
                "Check the database (soloist doctor).",
            );
        }
        completed(&step.name, output)
    }

    async fn email_lead(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
        lead: &Value,
        (draft_from, subject, status): (&str, &str, Option<&str>),
    ) -> Transition {
        let draft = state.outputs.get(draft_from);
        let approved = draft
            .and_then(|d| d.get("decision"))
            .and_then(Value::as_str)
            == Some("approved");
        if !approved {
            return completed(
                &step.name,
                json!({ "outcome": "not_sent", "why": "not approved" }),
            );
        }
        let to = lead
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim();
        if to.is_empty() {
            return failed(
                run,
                &step.name,
                "the lead gave no e-mail address".into(),
                "Reply to the lead yourself; the approved text is saved with the run.",
            );
        }
        let text = draft
            .and_then(|d| d.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let message = EmailMessage {
            to: to.to_string(),
            subject: subject.to_string(),
            text: text.to_string(),
            attachments: Vec::new(),
        };
        let key = format!("run:{}:{}", run.id, step.name);
        if let Err(error) = queue(&self.inner.store, message, &key).await {
            return failed(
                run,
                &step.name,
                error.to_string(),
                "Check the e-mail address and the database.",
            );
        }
        if let (Some(id), Some(status)) = (lead_id(lead), status.and_then(LeadStatus::parse))
            && let Err(error) = Leads(&self.inner.store).set_status(id, status).await
        {
            tracing::warn!(error = ?error, "the lead's status could not be set after its e-mail");
        }
        let mut transition = completed(&step.name, json!({ "outcome": "sent", "to": to }));
        transition
            .messages
            .push(crate::domain::Outbound::text(format!(
                "E-mail to {to} queued (run {}).",
                run.id.short()
            )));
        transition
    }

    async fn set_lead_status(
        &self,
        run: &RunRow,
        step: &StepDef,
        lead: &Value,
        status: &str,
    ) -> Transition {
        let Some(status) = LeadStatus::parse(status) else {
            return failed(
                run,
                &step.name,
                format!("'{status}' is not a lead status"),
                "Fix the flow file.",
            );
        };
        if let Some(id) = lead_id(lead)
            && let Err(error) = Leads(&self.inner.store).set_status(id, status).await
        {
            return failed(
                run,
                &step.name,
                error.to_string(),
                "Check the database (soloist doctor).",
            );
        }
        completed(&step.name, json!({ "outcome": status.as_str() }))
    }
}

/// The lead the run works on (see [`lead_of`]).
pub(super) fn run_lead(state: &RunState) -> Option<Value> {
    lead_of(run_event(state), &state.input.request)
}

/// The event that started the run (`{"id", "kind", "payload"}`).
fn run_event(state: &RunState) -> Option<&Value> {
    state.input.event.as_ref()
}

/// The lead's website's text through memory's guarded fetcher (public
/// addresses only, redirects checked, timeout and size cap), quoted as a
/// fetched page; a failure is a sentence, not a stop.
async fn website(url: &str) -> String {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    match fetch(&url, FetchLimits::default(), is_public).await {
        Ok(page) => {
            let text: String = page.text.chars().take(WEBSITE_CHARS).collect();
            quote(Origin::FetchedPage, &text)
        }
        Err(error) => format!("(the website could not be read: {error})"),
    }
}

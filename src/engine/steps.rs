//! What each step kind does. A step reads the run's folded state and returns
//! a [`Transition`]; it never writes to the store itself, so its effects are
//! committed all at once, after it returns, or not at all. One exception,
//! idempotent by design: `retrieve` first indexes decisions not yet in the
//! decision log (see `Engine::retrieve`).

use serde_json::json;

use super::Engine;
use super::generate_step::GenerateCall;
use super::state::{MAX_VISITS, RunState};
use super::transitions::Transition;
use crate::domain::{ArtifactId, Decision, InputPurpose, JournalEvent, Outbound, RunId, RunStatus};
use crate::flows::{END, Flow, StepDef, StepKind, Target};
use crate::store::{NewApproval, NewArtifact, NewBatchItem, RunRow};

/// A step that finished; the engine adds the run's completion when it was
/// the last.
pub(crate) fn completed(step: &str, output: serde_json::Value) -> Transition {
    let mut transition = Transition::new(RunStatus::Runnable);
    transition.events.push(JournalEvent::StepCompleted {
        step: step.to_string(),
        output,
    });
    transition
}

/// The run stops as failed, and the operator is told what failed and what
/// they can do.
pub(crate) fn failed(run: &RunRow, step: &str, error: String, advice: &str) -> Transition {
    let short = run.id.short();
    let mut transition = Transition::new(RunStatus::Failed);
    transition.messages.push(Outbound::text(format!(
        "Step '{step}' failed: {error}. {advice} Your request is kept as run {short}; send /retry {short} to try again."
    )));
    transition.events.push(JournalEvent::Failed {
        step: step.to_string(),
        error,
    });
    transition
}

impl Engine {
    pub(super) async fn execute_step(
        &self,
        run: &RunRow,
        flow: &Flow,
        step: &StepDef,
        state: &RunState,
    ) -> Transition {
        // POLICY HOOK: a required effect needs an approval in the journal.
        if let Some(refused) = self.refuse_unapproved(run, step).await {
            return refused;
        }
        match &step.kind {
            StepKind::Context => self.gather_context(step, state),
            StepKind::Generate {
                tier,
                system,
                prompt,
                max_tokens,
                temperature,
                urgent,
                outcomes,
            } => {
                let call = GenerateCall {
                    tier: *tier,
                    system,
                    prompt,
                    max_tokens: *max_tokens,
                    temperature: *temperature,
                    urgent: *urgent,
                    outcomes,
                };
                self.generate(run, flow, step, state, call).await
            }
            StepKind::Retrieve { top_k } => self.retrieve(run, step, state, *top_k).await,
            StepKind::Extract { .. }
            | StepKind::Enrich { .. }
            | StepKind::Score { .. }
            | StepKind::Email { .. }
            | StepKind::LeadStatus { .. } => self.lead_step(run, flow, step, state).await,
            StepKind::Approve {
                draft_from,
                artifact_kind,
                revise,
                labels,
            } => {
                // FUNNEL: the version before the latest revision, for Back.
                let previous = if *revise {
                    crate::funnel::previous_version(self, run.id, &step.name, state).await
                } else {
                    None
                };
                let options = Offering {
                    revise: *revise,
                    previous,
                };
                let routes_rejection = flow.names_outcome(&step.name, "rejected");
                let approval = ApproveStep {
                    draft_from,
                    artifact_kind,
                    routes_rejection,
                    reject_word: labels.reject.as_deref(),
                };
                let mut transition = approve(run, step, state, approval, &options);
                if *revise {
                    crate::funnel::keep_previous(self, run.id, &transition).await;
                }
                // The step's button words (LEADS: Pursue / Decline), and a
                // draft step's file (a proposal's PDF) goes with its offer.
                if let Some(approval) = transition.approval.as_mut() {
                    labels.apply(approval);
                    let output = state.outputs.get(draft_from);
                    approval.message.attachment =
                        crate::offers::step::attachment_for(output, &approval.draft);
                }
                // POLICY HOOK: flags on the approval message.
                self.guard_offer(run, state, draft_from, &mut transition)
                    .await;
                // AUTONOMY: at the flow's level an unflagged first offer is
                // approved in the operator's place; they are told after.
                let inner = &self.inner;
                let (store, settings) = (&inner.store, &inner.settings);
                let verdict = crate::autonomy::verdict(
                    store,
                    settings,
                    &flow.name,
                    state,
                    &step.name,
                    &mut transition,
                )
                .await;
                if let crate::autonomy::Verdict::Approve { by, notice } = verdict {
                    let said = (by.as_str(), notice.as_str());
                    transition = approved_by_autonomy(run, step, artifact_kind, transition, said);
                }
                transition
            }
            StepKind::FactCheck { .. } => {
                crate::funnel::fact_check(self, run, flow, step, state).await
            }
            StepKind::Publish { text_from } => {
                crate::funnel::publish_step(self, run, step, state, text_from)
            }
            StepKind::Quote => {
                let inner = &self.inner;
                let output =
                    crate::offers::step::quote(&inner.store, &inner.settings, run.id).await;
                self.offer_step(run, step, output)
            }
            StepKind::Proposal {
                template,
                quote_from,
                scope_from,
                cover_from,
            } => {
                let inner = &self.inner;
                let parts = crate::offers::step::ProposalParts {
                    template,
                    quote_from,
                    scope_from,
                    cover_from,
                };
                let output = crate::offers::step::proposal(
                    &inner.store,
                    &inner.settings,
                    &inner.prompts,
                    &state.outputs,
                    parts,
                )
                .await;
                self.offer_step(run, step, output)
            }
            StepKind::DigestNumbers => self.digest_numbers(run, step, state).await,
            StepKind::DigestRender { template, from } => {
                self.digest_render(run, step, state, template, from)
            }
            StepKind::DigestSummary { text_from } => {
                self.digest_summary(run, step, state, text_from).await
            }
            StepKind::DigestDeliver {
                text_from,
                numbers_from,
            } => {
                self.digest_deliver(run, step, state, text_from, numbers_from)
                    .await
            }
            StepKind::SendProposal {
                proposal_from,
                approved_from,
            } => {
                let inner = &self.inner;
                let sources = crate::offers::step::SendParts {
                    proposal_from,
                    approved_from,
                };
                let sent = crate::offers::step::send(
                    &inner.store,
                    &inner.settings,
                    run.id,
                    &state.outputs,
                    sources,
                )
                .await;
                match sent {
                    Ok((output, said)) => {
                        let mut transition = self.offer_step(run, step, Ok(output));
                        transition.messages.push(Outbound::text(said));
                        transition
                    }
                    Err(error) => self.offer_step(run, step, Err(error)),
                }
            }
        }
    }

    /// An offer step's output journaled, or the run stopped saying why.
    fn offer_step(
        &self,
        run: &RunRow,
        step: &StepDef,
        output: Result<serde_json::Value, crate::offers::step::StepError>,
    ) -> Transition {
        match output {
            Ok(output) => completed(&step.name, output),
            Err(error) => {
                tracing::warn!(error = ?error, "offer step failed");
                failed(run, &step.name, error.to_string(), error.advice())
            }
        }
    }

    fn gather_context(&self, step: &StepDef, state: &RunState) -> Transition {
        let settings = &self.inner.settings;
        completed(
            &step.name,
            json!({
                "request": state.input.request,
                "business": settings.business,
                "brand_voice": settings.brand_voice,
                "offers": settings.offers,
            }),
        )
    }

    /// What the business knows about the request; the output is the
    /// retrieval trace (query, chunks, scores, why) and the quoted material.
    ///
    /// The one write it makes is outside the step's transaction: decisions
    /// not yet in the decision log are indexed first. That is idempotent (a
    /// decision's entry is keyed by its artifact id, written only when
    /// missing, and a concurrent writer's duplicate is ignored), so a step
    /// repeated after a lapsed claim, or run by a second worker whose
    /// fenced commit is then refused, leaves the index as one run would.
    async fn retrieve(
        &self,
        run: &RunRow,
        step: &StepDef,
        state: &RunState,
        top_k: Option<usize>,
    ) -> Transition {
        let settings = &self.inner.settings.memory;
        let memory =
            crate::memory::Memory::from_settings(self.inner.store.clone(), &self.inner.settings);
        let k = top_k.unwrap_or(settings.top_k);
        match memory.recall(&state.input.request, &run.chat, k).await {
            Ok(recall) => completed(&step.name, recall.to_json()),
            Err(error) => {
                tracing::warn!(error = ?error, "retrieval failed");
                failed(
                    run,
                    &step.name,
                    error.to_string(),
                    "Check the database (soloist doctor).",
                )
            }
        }
    }

    /// The values every prompt template sees.
    fn template_values(&self, state: &RunState) -> serde_json::Value {
        let settings = &self.inner.settings;
        json!({
            "business": settings.business,
            "brand_voice": settings.brand_voice,
            "offers": settings.offers,
            "policy": settings.policy,
            "request": state.input.request,
            "outputs": state.outputs,
            "event": state.input.event,
        })
    }

    /// POLICY HOOK: the values a prompt is rendered with, every untrusted
    /// text in them quoted as data: the request with its origin, earlier
    /// steps' outputs with theirs (see [`quote_outputs`]).
    pub(crate) async fn prompt_values(&self, run: &RunRow, state: &RunState) -> serde_json::Value {
        let mut values = self.template_values(state);
        let origin = self.run_origin(run.id).await;
        values["request"] = crate::policy::quote(origin, &state.input.request).into();
        values["outputs"] = quote_outputs(&state.outputs, origin);
        if let Some(event) = values.get_mut("event") {
            quote_strings(event, origin);
        }
        if let Some(lead) = super::lead_steps::run_lead(state) {
            values["lead"] = super::lead_steps::quoted_lead(&lead);
        }
        values
    }
}

/// Earlier steps' outputs as a prompt sees them. A model's text (a
/// generate step's, or a draft an approval saved) is quoted as model
/// output; a context step's copy of the request is quoted with the
/// request's origin; a retrieval offers only its quoted material and its
/// sources line, never the raw chunks.
fn quote_outputs(
    outputs: &std::collections::BTreeMap<String, serde_json::Value>,
    origin: crate::policy::Origin,
) -> serde_json::Value {
    use crate::policy::{Origin, neutralize, quote, quote_labelled};
    let mut quoted = serde_json::Map::new();
    for (step, output) in outputs {
        let mut output = output.clone();
        if let Some(object) = output.as_object_mut() {
            if object.contains_key("quoted") && object.contains_key("chunks") {
                let material = object.get("quoted").cloned().unwrap_or_default();
                let sources = object
                    .get("sources")
                    .and_then(|s| s.as_str())
                    .map(neutralize)
                    .unwrap_or_default();
                output = json!({ "quoted": material, "sources": sources });
            } else {
                if let Some(text) = object.get("text").and_then(|t| t.as_str()) {
                    let label = format!("step {step}");
                    let text = quote_labelled(Origin::ModelOutput, &label, text);
                    object.insert("text".into(), text.into());
                }
                if let Some(request) = object.get("request").and_then(|t| t.as_str()) {
                    let request = quote(origin, request);
                    object.insert("request".into(), request.into());
                }
            }
        }
        quoted.insert(step.clone(), output);
    }
    serde_json::Value::Object(quoted)
}

/// Every string in an event's payload quoted as data of `origin`: the
/// payload came from outside (a web hook's lead, another flow's output).
fn quote_strings(value: &mut serde_json::Value, origin: crate::policy::Origin) {
    match value {
        serde_json::Value::String(text) => *text = crate::policy::quote(origin, text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| quote_strings(v, origin)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| quote_strings(v, origin)),
        _ => {}
    }
}

/// An approve step's settings, and whether its `next` routes a rejection
/// (else a rejection ends the run, as it always did).
struct ApproveStep<'a> {
    draft_from: &'a str,
    artifact_kind: &'a str,
    routes_rejection: bool,
    /// The Reject button's own word (LEADS: "Decline"), for the question.
    reject_word: Option<&'a str>,
}

/// The approval conversation: offer the draft; on Approve save it; on Edit
/// take the next message as the new draft and offer again; on Reject ask
/// why, then save the rejection with its reason.
fn approve(
    run: &RunRow,
    step: &StepDef,
    state: &RunState,
    approval: ApproveStep<'_>,
    options: &Offering,
) -> Transition {
    let ApproveStep {
        draft_from,
        artifact_kind,
        routes_rejection,
        reject_word,
    } = approval;
    let conversation = state.conversation(&step.name);
    let draft = conversation.draft.clone().unwrap_or_default();
    let mut sources = crate::memory::sources_in(&state.outputs)
        .map(|s| format!("\n\nSources: {s}"))
        .unwrap_or_default();
    // FUNNEL: the fact check's doubtful claims, under the draft.
    sources.push_str(&crate::funnel::fact_notes(&state.outputs));
    match &conversation.latest {
        None => {
            let first_draft = state
                .outputs
                .get(draft_from)
                .and_then(|o| o.get("text"))
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            offer(run, step, first_draft, &sources, options)
        }
        Some(JournalEvent::Decided { decision, .. }) => match decision {
            Decision::Approve => save(run, step, artifact_kind, &draft, None, false),
            Decision::Edit => ask_for_input(
                step,
                InputPurpose::EditedDraft,
                "Send me the new version of the draft as your next message.",
            ),
            Decision::Reject => ask_for_input(
                step,
                InputPurpose::RejectReason,
                &format!(
                    "Why {} it? Your next message is saved as the reason.",
                    reject_word.unwrap_or("reject").to_lowercase()
                ),
            ),
            Decision::Revise => ask_for_input(
                step,
                InputPurpose::ReviseInstruction,
                "What should change? For example: shorter, mention the deposit, no emoji.",
            ),
            Decision::Back => match &options.previous {
                Some(previous) => offer(run, step, previous, &sources, options),
                None => offer(run, step, &draft, &sources, options),
            },
        },
        Some(JournalEvent::InputReceived { purpose, text, .. }) => match purpose {
            InputPurpose::EditedDraft => offer(run, step, text, &sources, options),
            InputPurpose::ReviseInstruction => {
                completed(&step.name, crate::funnel::revise_output(&draft, text))
            }
            InputPurpose::RejectReason => {
                let Some(approval_id) = conversation.approval_id else {
                    return failed(
                        run,
                        &step.name,
                        "a reason arrived for no approval".into(),
                        "",
                    );
                };
                let mut transition = save(
                    run,
                    step,
                    artifact_kind,
                    &draft,
                    Some(text),
                    !routes_rejection,
                );
                transition.reject_reason = Some((approval_id, text.clone()));
                transition
            }
            InputPurpose::PublishTime => failed(
                run,
                &step.name,
                "a publishing time arrived for an approval".into(),
                "This is a bug; please report it with `soloist replay`.",
            ),
        },
        Some(other) => failed(
            run,
            &step.name,
            format!(
                "unexpected journal event '{}' while waiting for a decision",
                other.name()
            ),
            "This is a bug; please report it with `soloist replay`.",
        ),
    }
}

/// FUNNEL: what an approval offers besides Approve / Edit / Reject.
pub(super) struct Offering {
    /// Revise (and Back, when there is a previous version).
    revise: bool,
    previous: Option<String>,
}

fn offer(
    run: &RunRow,
    step: &StepDef,
    draft: &str,
    sources: &str,
    options: &Offering,
) -> Transition {
    let text = format!(
        "Draft for review (run {}):\n\n{draft}{sources}",
        run.id.short()
    );
    let approval = if options.revise {
        let back = options.previous.as_deref().is_some_and(|p| p != draft);
        let decisions: Vec<Decision> = Decision::EVERY
            .into_iter()
            .filter(|d| *d != Decision::Back || back)
            .collect();
        NewApproval::offer_with(&step.name, draft, text, &decisions)
    } else {
        NewApproval::offer(&step.name, draft, text)
    };
    let mut transition = Transition::new(RunStatus::WaitingApproval);
    transition.events.push(JournalEvent::ApprovalRequested {
        step: step.name.clone(),
        approval_id: approval.id,
        draft: draft.to_string(),
    });
    transition.approval = Some(approval);
    transition
}

/// The run waits for the batch that will carry its call.
pub(super) fn queued(run: &RunRow, step: &StepDef, item: NewBatchItem) -> Transition {
    let mut transition = Transition::new(RunStatus::WaitingBatch);
    transition.events.push(JournalEvent::BatchQueued {
        step: step.name.clone(),
        item_id: item.id.clone(),
    });
    transition.messages.push(Outbound::text(format!(
        "Step '{}' is queued for the next batch (cheaper, not instant); run {} goes on when it comes back.",
        step.name,
        run.id.short()
    )));
    transition.batch_item = Some(item);
    transition
}

fn ask_for_input(step: &StepDef, purpose: InputPurpose, question: &str) -> Transition {
    let mut transition = Transition::new(RunStatus::WaitingInput);
    transition.waiting_for = Some(purpose);
    transition.events.push(JournalEvent::InputRequested {
        step: step.name.clone(),
        purpose,
    });
    transition.messages.push(Outbound::text(question));
    transition
}

/// Stores the draft as an artifact: approved, or rejected with its reason.
/// The step's outcome is `approved` or `rejected`; a rejection ends the run
/// when `rejection_ends` (its `next` does not route it).
fn save(
    run: &RunRow,
    step: &StepDef,
    kind: &str,
    draft: &str,
    reject_reason: Option<&String>,
    rejection_ends: bool,
) -> Transition {
    let artifact_id = ArtifactId::new();
    let status = if reject_reason.is_some() {
        "rejected"
    } else {
        "approved"
    };
    let mut transition = completed(
        &step.name,
        json!({
            "decision": status,
            "outcome": status,
            "artifact_id": artifact_id,
            "text": draft,
            "reason": reject_reason,
        }),
    );
    transition.events.insert(
        0,
        JournalEvent::ArtifactSaved {
            step: step.name.clone(),
            artifact_id,
            status: status.into(),
        },
    );
    if reject_reason.is_none() {
        let payload = json!({
            "run_id": run.id,
            "flow": run.flow,
            "step": step.name,
            "artifact_id": artifact_id,
            "artifact_kind": kind,
            "text": draft,
        });
        let key = format!("draft.approved:{artifact_id}");
        transition
            .emits
            .push(("draft.approved".into(), payload, key));
    }
    transition.artifact = Some(NewArtifact {
        id: artifact_id,
        kind: kind.to_string(),
        status: status.into(),
        content: draft.to_string(),
        note: reject_reason.cloned(),
    });
    let message = match reject_reason {
        None => format!(
            "Approved. Saved as artifact {} (run {}).",
            artifact_id.short(),
            run.id.short()
        ),
        Some(_) if !rejection_ends => format!(
            "Rejected. The draft and your reason are saved; run {} goes on.",
            run.id.short()
        ),
        Some(_) => {
            transition.status = RunStatus::Completed;
            let summary = "rejected".to_string();
            transition.summary = Some(summary.clone());
            transition.events.push(JournalEvent::Completed { summary });
            format!(
                "Rejected. The draft and your reason are saved (run {}).",
                run.id.short()
            )
        }
    };
    transition.messages.push(Outbound::text(message));
    transition
}

/// AUTONOMY: an offer approved in the operator's place: journaled as asked
/// and decided by autonomy (`by`), saved as an approval would save it, and
/// the operator told what goes out (with the offer's file, if any).
fn approved_by_autonomy(
    run: &RunRow,
    step: &StepDef,
    kind: &str,
    offer: Transition,
    (by, notice): (&str, &str),
) -> Transition {
    let Some(approval) = offer.approval else {
        return offer;
    };
    let mut transition = save(run, step, kind, &approval.draft, None, false);
    let asked = JournalEvent::ApprovalRequested {
        step: step.name.clone(),
        approval_id: approval.id,
        draft: approval.draft.clone(),
    };
    let decided = JournalEvent::Decided {
        step: step.name.clone(),
        approval_id: approval.id,
        decision: Decision::Approve,
        by: by.to_string(),
    };
    transition.events.splice(0..0, [asked, decided]);
    transition.guardrails = offer.guardrails;
    let short = run.id.short();
    let mut told = Outbound::text(format!(
        "{notice}\n\n{}\n\n(run {short}; /run {short} shows who decided)",
        approval.draft
    ));
    told.attachment = approval.message.attachment;
    transition.messages = vec![told];
    transition
}

/// Journals where the run goes after the step at `index`, when it
/// completed in this transition and the run goes on: the target its `next`
/// names for its outcome, else the following step, else the end.
pub(super) fn route_after(
    transition: &mut Transition,
    run: &RunRow,
    state: &RunState,
    flow: &Flow,
    index: usize,
) {
    let Some(step) = flow.steps.get(index) else {
        return;
    };
    if transition.status != RunStatus::Runnable {
        return;
    }
    let outcome = transition
        .events
        .iter()
        .rev()
        .find_map(|event| match event {
            JournalEvent::StepCompleted { step: done, output } if *done == step.name => Some(
                output
                    .get("outcome")
                    .and_then(|o| o.as_str())
                    .map(str::to_string),
            ),
            _ => None,
        });
    let Some(outcome) = outcome else {
        return;
    };
    let to = match flow.route(index, outcome.as_deref()) {
        Target::Step(next) => flow.steps[next].name.clone(),
        Target::End => END.to_string(),
    };
    if state.visits.get(&to).copied().unwrap_or_default() >= MAX_VISITS {
        let error =
            format!("the flow entered step '{to}' {MAX_VISITS} times; its loop does not end");
        *transition = failed(run, &step.name, error, "Check the flow's `next` targets.");
        return;
    }
    transition.events.push(JournalEvent::Routed {
        from: step.name.clone(),
        outcome,
        to,
    });
}

/// Closes the run when its route reached the end.
pub(super) fn finish_if_done(
    transition: &mut Transition,
    state_after: &RunState,
    flow: &Flow,
    run_id: RunId,
) {
    if transition.status == RunStatus::Runnable && state_after.cursor(flow) >= flow.steps.len() {
        let summary = match state_after
            .outputs
            .values()
            .last()
            .and_then(|o| o.get("decision"))
        {
            Some(decision) => decision.as_str().unwrap_or("done").to_string(),
            None => "done".to_string(),
        };
        tracing::info!(run = %run_id, %summary, "run completed");
        transition.status = RunStatus::Completed;
        transition.summary = Some(summary.clone());
        transition.events.push(JournalEvent::Completed { summary });
    }
}

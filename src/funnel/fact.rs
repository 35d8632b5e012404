//! The `fact_check` step kind: the draft's factual claims against what the
//! business knows. The knowledge comes from memory's retrieval (searched
//! with the draft itself, so a claim the request never mentioned is still
//! checked); the draft goes into the prompt quoted as model output and the
//! knowledge quoted with its sources, so neither can instruct the checker.
//! The reply is structured (a JSON schema); a source the model names that
//! was not among the retrieved ones is not trusted as a source.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::agents::ModelCall;
use crate::engine::{Engine, RunState, Transition, completed, failed};
use crate::flows::{Flow, StepDef, StepKind};
use crate::policy::{Origin, quote_labelled};
use crate::store::RunRow;

/// Knowledge chunks the checker sees when the step names no `top_k`.
const DEFAULT_TOP_K: usize = 6;

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
struct Claim {
    claim: String,
    /// supported | unsupported | contradicted
    verdict: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    evidence: String,
}

#[derive(Debug, Deserialize)]
struct Reply {
    claims: Vec<Claim>,
}

fn reply_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "claims": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "claim": {"type": "string"},
                        "verdict": {"type": "string", "enum": ["supported", "unsupported", "contradicted"]},
                        "source": {"type": "string"},
                        "evidence": {"type": "string"}
                    },
                    "required": ["claim", "verdict", "source", "evidence"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["claims"],
        "additionalProperties": false
    })
}

/// Runs a `fact_check` step.
pub async fn fact_check(
    engine: &Engine,
    run: &RunRow,
    flow: &Flow,
    step: &StepDef,
    state: &RunState,
) -> Transition {
    let StepKind::FactCheck {
        draft_from,
        tier,
        system,
        prompt,
        top_k,
    } = &step.kind
    else {
        return failed(run, &step.name, "not a fact_check step".into(), "");
    };
    let draft = state
        .outputs
        .get(draft_from)
        .and_then(|o| o.get("text"))
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    let memory =
        crate::memory::Memory::new(engine.store().clone(), engine.settings().memory.clone());
    let hits = match memory.retrieve(draft, top_k.unwrap_or(DEFAULT_TOP_K)).await {
        Ok(hits) => hits,
        Err(error) => {
            tracing::warn!(error = ?error, "fact-check retrieval failed");
            return failed(
                run,
                &step.name,
                error.to_string(),
                "Check the database (soloist doctor).",
            );
        }
    };
    let sources: Vec<String> = hits.iter().map(|h| h.label.clone()).collect();
    let knowledge: Vec<Value> = hits
        .iter()
        .map(|hit| {
            json!({
                "source": hit.label,
                "citation": hit.citation(),
                "quoted": quote_labelled(Origin::Knowledge, &hit.citation(), &hit.text),
            })
        })
        .collect();
    let mut values = engine.prompt_values(run, state).await;
    values["draft"] =
        quote_labelled(Origin::ModelOutput, &format!("step {draft_from}"), draft).into();
    values["knowledge"] = Value::Array(knowledge);
    let prompts = engine.prompts();
    let rendered = prompts
        .render(system, &values)
        .and_then(|s| Ok((s, prompts.render(prompt, &values)?)));
    let (system, prompt) = match rendered {
        Ok(pair) => pair,
        Err(error) => return failed(run, &step.name, error.to_string(), "Fix the prompt file."),
    };
    let call = ModelCall {
        tier: state.tier_override.unwrap_or(*tier),
        label: flow.cost_label,
        system,
        prompt,
        max_tokens: 800,
        temperature: Some(0.0),
        run_id: Some(run.id),
        flow: Some(flow.name.clone()),
        step: Some(step.name.clone()),
        reply_schema: Some(reply_schema()),
        redacted_items: 0,
    };
    match engine.agents().complete(&call).await {
        Ok(completion) => completed(
            &step.name,
            checked(&completion.text, &sources, &completion.model),
        ),
        Err(error) => {
            tracing::warn!(error = ?error, "fact-check call failed");
            failed(run, &step.name, error.to_string(), error.advice())
        }
    }
}

/// The step's output from the model's reply: every claim, the doubtful ones
/// as notes for the approval, and `uncertain` when there are any (an
/// autonomy level of `borderline` then keeps the approval). A reply that is
/// not the schema's JSON is kept as one note, never dropped.
fn checked(reply: &str, sources: &[String], model: &str) -> Value {
    let parsed: Result<Reply, _> = serde_json::from_str(strip_fence(reply));
    let Ok(parsed) = parsed else {
        return json!({
            "claims": [],
            "notes": ["the fact check's answer could not be read; check the facts yourself"],
            "uncertain": true,
            "model": model,
        });
    };
    let mut notes = Vec::new();
    let mut claims = Vec::new();
    for mut claim in parsed.claims {
        // A source the retrieval did not return is the model's invention.
        if !claim.source.is_empty() && !sources.iter().any(|s| s == &claim.source) {
            if claim.verdict == "supported" {
                claim.verdict = "unsupported".into();
            }
            claim.source = String::new();
        }
        match claim.verdict.as_str() {
            "contradicted" if !claim.source.is_empty() => notes.push(format!(
                "draft says {}; {} says {}",
                claim.claim.trim(),
                claim.source,
                claim.evidence.trim()
            )),
            "contradicted" | "unsupported" => notes.push(format!(
                "draft says {}; nothing in the knowledge base supports it",
                claim.claim.trim()
            )),
            _ => {}
        }
        claims.push(claim);
    }
    json!({
        "claims": claims,
        "notes": notes,
        "uncertain": !notes.is_empty(),
        "model": model,
    })
}

/// Some models wrap JSON in a Markdown fence even when asked not to.
fn strip_fence(text: &str) -> &str {
    let text = text.trim();
    let Some(inner) = text.strip_prefix("```") else {
        return text;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// The lines the approval message shows under the draft: the doubtful
/// claims of the run's fact checks. Empty when there are none.
pub fn fact_notes(outputs: &BTreeMap<String, Value>) -> String {
    let notes: Vec<&str> = outputs
        .values()
        .filter(|o| o.get("claims").is_some())
        .filter_map(|o| o.get("notes").and_then(|n| n.as_array()))
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    if notes.is_empty() {
        return String::new();
    }
    let mut text = String::from("\n\nFact check:");
    for note in notes {
        text.push_str("\n- ");
        text.push_str(note);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contradicted_claim_names_its_source_and_an_invented_source_is_dropped() {
        let reply = r#"{"claims":[
            {"claim":"founded in 2015","verdict":"contradicted","source":"about.md","evidence":"founded in 2019"},
            {"claim":"twelve pages","verdict":"supported","source":"made-up.md","evidence":"x"},
            {"claim":"three days","verdict":"supported","source":"offers.md","evidence":"3 days"}]}"#;
        let output = checked(reply, &["about.md".into(), "offers.md".into()], "m");
        assert_eq!(
            output["notes"],
            json!([
                "draft says founded in 2015; about.md says founded in 2019",
                "draft says twelve pages; nothing in the knowledge base supports it"
            ])
        );
        assert_eq!(output["uncertain"], true);
    }

    #[test]
    fn an_unreadable_reply_is_a_note_not_a_silent_pass() {
        let output = checked("Looks fine to me!", &[], "m");
        assert_eq!(output["uncertain"], true);
        assert_eq!(output["notes"].as_array().unwrap().len(), 1);
    }
}

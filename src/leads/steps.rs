//! The pure halves of the lead step kinds (`extract`, `score`, `email`,
//! `lead_status`): where a run finds its lead, what the extraction model
//! must answer, how its answer is read, what the score step outputs. The
//! engine does the I/O (`engine::lead_steps`).

use serde_json::{Value, json};

use crate::policy::{Origin, quote_labelled};

use super::score::{Criteria, Extracted, Tier, first_number, score};

/// The lead a run works on: the `lead.received` event's payload that
/// started it, or a lead JSON given as the run's request (a test, a replay
/// of an older run).
pub fn lead_of(event: Option<&Value>, request: &str) -> Option<Value> {
    if let Some(payload) = event.and_then(|e| e.get("payload")) {
        return Some(payload.clone());
    }
    serde_json::from_str::<Value>(request)
        .ok()
        .filter(|v| v.get("message").is_some())
}

/// The lead's id in the `leads` table, when it has one.
pub fn lead_id(lead: &Value) -> Option<i64> {
    lead.get("lead_id").and_then(Value::as_i64)
}

/// The lead as a prompt sees it: every field quoted as a web-hook lead's
/// text (data, never instructions). Every field is there, empty when the
/// lead did not give it: templates refuse an undefined value, and a
/// fixture line or a form may leave out `email` or `website`.
pub fn quoted_lead(lead: &Value) -> Value {
    let mut quoted = serde_json::Map::new();
    for key in ["name", "company", "email", "website", "message", "source"] {
        let text = lead
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        let value = match text {
            "" => String::new(),
            text => quote_labelled(Origin::WebhookLead, &format!("lead {key}"), text),
        };
        quoted.insert(key.into(), value.into());
    }
    Value::Object(quoted)
}

/// The JSON schema the extraction answer follows (structured output).
pub fn extract_schema() -> Value {
    let text = json!({ "type": ["string", "null"] });
    json!({
        "title": "lead",
        "type": "object",
        "properties": {
            "name": text, "company": text, "email": text,
            "budget": { "type": ["number", "null"], "description": "in euros" },
            "timeline": text, "need": text, "website": text,
            "team_size": { "type": ["integer", "null"] }
        },
        "required": ["name", "company", "email", "budget", "timeline", "need", "website", "team_size"],
        "additionalProperties": false
    })
}

/// Reads the model's extraction (the first JSON object in its answer),
/// then fills what it left out from the lead's own fields (a form's
/// `email` beats a guess). An unreadable answer gives the lead's fields
/// alone, never an error: the score then says what is missing.
pub fn read_extraction(answer: &str, lead: &Value) -> Extracted {
    let json = match (answer.find('{'), answer.rfind('}')) {
        (Some(start), Some(end)) if start < end => &answer[start..=end],
        _ => "",
    };
    let mut extracted: Extracted = serde_json::from_str(json).unwrap_or_default();
    let field = |key: &str| {
        lead.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let fill = |slot: &mut Option<String>, key: &str| {
        if slot.as_deref().is_none_or(|s| s.trim().is_empty()) {
            *slot = field(key);
        }
    };
    fill(&mut extracted.name, "name");
    fill(&mut extracted.company, "company");
    fill(&mut extracted.email, "email");
    fill(&mut extracted.website, "website");
    if extracted.team_size.is_none() {
        extracted.team_size = lead
            .get("fields")
            .and_then(|f| f.get("size"))
            .and_then(Value::as_str)
            .and_then(first_number);
    }
    extracted
}

/// The score step's output: the tier as the outcome `next` branches on,
/// the reasons, and `uncertain` for a borderline lead (autonomy keeps its
/// approval).
pub fn score_output(extracted: &Extracted, criteria: &Criteria) -> (Value, super::Scored) {
    let scored = score(extracted, criteria);
    let who = [extracted.name.as_deref(), extracted.company.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    let summary = format!(
        "Lead {who}: {} (score {}).\n- {}",
        scored.tier.as_str(),
        scored.score,
        scored.reasons.join("\n- ")
    );
    let output = json!({
        "outcome": scored.tier.as_str(),
        "score": scored.score,
        "reasons": scored.reasons,
        "uncertain": scored.tier == Tier::Borderline,
        // The approval of a borderline lead shows this text.
        "text": summary,
        "fields": extracted,
    });
    (output, scored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_s_own_fields_fill_what_the_model_left_out() {
        let lead =
            json!({"name": "Rui", "email": "rui@x.example", "fields": {"size": "12 people"}});
        let got = read_extraction(
            "Here you go: {\"name\": null, \"budget\": 6000, \"need\": \"rebrand\"}",
            &lead,
        );
        assert_eq!(got.name.as_deref(), Some("Rui"));
        assert_eq!(got.email.as_deref(), Some("rui@x.example"));
        assert_eq!(got.budget, Some(6000.0));
        assert_eq!(got.team_size, Some(12));
    }

    #[test]
    fn a_lead_without_email_or_website_is_quoted_with_those_fields_empty() {
        let quoted = quoted_lead(&json!({"name": "Tom", "message": "a logo?", "email": " "}));
        assert_eq!(quoted["website"], "");
        assert_eq!(quoted["email"], "");
        assert!(
            quoted["message"]
                .as_str()
                .unwrap()
                .contains("not instructions"),
            "{quoted}"
        );
    }

    #[test]
    fn an_unreadable_answer_keeps_the_lead_s_fields_only() {
        let got = read_extraction("no idea", &json!({"company": "Park Bikes"}));
        assert_eq!(got.company.as_deref(), Some("Park Bikes"));
        assert_eq!(got.budget, None);
    }

    #[test]
    fn a_borderline_score_is_marked_uncertain() {
        let extracted = Extracted {
            need: Some("some design help, not sure".into()),
            team_size: Some(40),
            ..Extracted::default()
        };
        let (output, _) = score_output(&extracted, &Criteria::default());
        assert_eq!(output["outcome"], "borderline");
        assert_eq!(output["uncertain"], true);
    }
}

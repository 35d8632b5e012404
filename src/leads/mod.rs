//! Leads: people asking for work. A lead arrives by the web hook
//! (`POST /hooks/lead`, see [`hook`]) or by `/lead TEXT`; storing it emits
//! `lead.received` in the same transaction, and the qualification flow
//! (`config/flows/lead-qualification.toml`) reacts to that event. Its
//! status (new, replied, pursuing, won, lost, declined) is shown by
//! `/leads`; a replied lead that goes quiet gets a follow-up reminder.
//!
//! Every text of a lead came from outside: it is data for the flow's
//! steps, quoted as untrusted, and never chooses a step or a setting.

pub mod hook;
pub mod score;
mod store;

pub use score::{Criteria, Extracted, Scored, Tier};
pub use store::{LeadRow, Leads, NewLead, store_lead};

use serde::Deserialize;

use crate::config::Secret;

/// `[leads]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LeadSettings {
    /// A replied lead quiet for this many days gets a reminder.
    pub follow_up_days: u32,
    pub criteria: Criteria,
}

impl Default for LeadSettings {
    fn default() -> Self {
        LeadSettings {
            follow_up_days: 5,
            criteria: Criteria::default(),
        }
    }
}

/// `[hooks]` settings: the web hooks' shared secrets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HookSettings {
    /// `SOLOIST__HOOKS__LEAD_SECRET`: sent as `Authorization: Bearer …`,
    /// or used as the HMAC-SHA256 key of `X-Soloist-Signature`. Unset: the
    /// lead hook refuses everything.
    pub lead_secret: Secret,
}

/// A lead's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadStatus {
    New,
    Replied,
    Pursuing,
    Won,
    Lost,
    Declined,
}

impl LeadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Replied => "replied",
            LeadStatus::Pursuing => "pursuing",
            LeadStatus::Won => "won",
            LeadStatus::Lost => "lost",
            LeadStatus::Declined => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<LeadStatus> {
        [
            LeadStatus::New,
            LeadStatus::Replied,
            LeadStatus::Pursuing,
            LeadStatus::Won,
            LeadStatus::Lost,
            LeadStatus::Declined,
        ]
        .into_iter()
        .find(|s| s.as_str() == text.trim().to_ascii_lowercase())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error("a lead needs a message")]
    NoMessage,
    #[error("the lead is not JSON or a form: {0}")]
    Unreadable(String),
    #[error("could not store the lead")]
    Store(#[from] crate::store::StoreError),
}

/// The event a stored lead emits.
pub const LEAD_RECEIVED: &str = "lead.received";

/// Emits `lead.received` inside `tx`, keyed by the lead.
///
/// PENDING flowcore: the `events` table and `store::events::emit_in` land
/// on the `flowcore` branch; once merged this calls
/// `crate::store::events::emit_in(tx, LEAD_RECEIVED, payload, key)`.
async fn emit_received(
    tx: &mut crate::store::Tx,
    payload: serde_json::Value,
    key: &str,
) -> crate::store::StoreResult<()> {
    let _ = (tx, payload, key);
    Ok(())
}

/// Largest body the hook reads.
pub const MAX_BODY: usize = 64 * 1024;

/// A lead from a JSON object or a form's fields. Known fields become
/// columns; the rest (size, received, …) stay in `fields`.
pub fn from_fields(
    fields: serde_json::Map<String, serde_json::Value>,
    default_source: &str,
    raw: &[u8],
) -> Result<NewLead, LeadError> {
    let text = |key: &str| {
        fields
            .get(key)
            .map(|v| match v {
                serde_json::Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let message = text("message");
    if message.is_empty() {
        return Err(LeadError::NoMessage);
    }
    let external_id = match text("id") {
        id if !id.is_empty() => format!("id:{id}"),
        _ => format!("sha256:{}", hex_sha256(raw)),
    };
    let source = match text("source") {
        s if s.is_empty() => default_source.to_string(),
        s => s,
    };
    Ok(NewLead {
        external_id,
        source,
        name: text("name"),
        company: text("company"),
        email: text("email"),
        website: text("website"),
        message,
        fields: serde_json::Value::Object(fields),
    })
}

/// A lead from a hook body: JSON when it parses as an object, else a form.
pub fn parse_body(body: &[u8], content_type: &str) -> Result<NewLead, LeadError> {
    let is_form = content_type.starts_with("application/x-www-form-urlencoded");
    let fields = if is_form {
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect()
    } else {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(LeadError::Unreadable("not a JSON object".into())),
            Err(e) => return Err(LeadError::Unreadable(e.to_string())),
        }
    };
    from_fields(fields, "web hook", body)
}

/// A lead pasted or forwarded in chat (`/lead TEXT`): the whole text is its
/// message; the extract step finds the rest.
pub fn from_text(text: &str) -> Result<NewLead, LeadError> {
    let mut fields = serde_json::Map::new();
    fields.insert("message".into(), text.trim().into());
    from_fields(fields, "chat", text.trim().as_bytes())
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_post_and_its_json_twin_are_the_same_lead() {
        let form = parse_body(
            b"id=T9&name=Rui&message=Brand+Sprint+please&size=12+people",
            "application/x-www-form-urlencoded",
        )
        .unwrap();
        let json = parse_body(
            br#"{"id":"T9","name":"Rui","message":"Brand Sprint please","size":"12 people"}"#,
            "application/json",
        )
        .unwrap();
        assert_eq!(form.external_id, json.external_id);
        assert_eq!(form.message, "Brand Sprint please");
        assert_eq!(form.fields["size"], "12 people");
    }

    #[test]
    fn a_lead_without_a_message_is_refused() {
        assert!(matches!(
            parse_body(br#"{"name":"x"}"#, "application/json"),
            Err(LeadError::NoMessage)
        ));
    }
}

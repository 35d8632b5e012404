//! One HTTP call to one model, through rig-core: OpenAI's
//! `/chat/completions` (and every endpoint that speaks it) or Anthropic's
//! `/v1/messages`. Failures are sorted into what the router can act on:
//! retry, wait as told, or move on.

use std::time::Duration;

use rig_core::completion::{CompletionRequest, CompletionResponse};
use rig_core::providers::anthropic::{Anthropic, AnthropicConfig};
use rig_core::providers::openai::{OpenAI, OpenAIConfig};

use crate::config::{ProviderKind, ProviderSettings};

/// A configured provider's client.
#[derive(Clone)]
pub enum Provider {
    // Boxed: rig's OpenAI client is three times the size of Anthropic's.
    OpenAi(Box<OpenAI>),
    Anthropic(Box<Anthropic>),
}

/// The request one attempt sends.
#[derive(Debug, Clone)]
pub struct Prompt<'a> {
    pub system: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u64,
    pub temperature: Option<f64>,
    /// Structured output: the JSON schema the reply must follow.
    pub reply_schema: Option<&'a serde_json::Value>,
}

/// What the provider answered, with its own token counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

/// Why one attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("did not answer within {0} s")]
    Timeout(u64),
    #[error("answered HTTP {status}: {detail}")]
    Status {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("rejected the API key")]
    Unauthorized,
    #[error("could not be reached ({0})")]
    Unreachable(String),
    #[error("sent a reply soloist could not read ({0})")]
    Malformed(String),
    #[error("returned no text")]
    Empty,
}

impl CallError {
    /// The ledger's name for it.
    pub fn kind(&self) -> String {
        match self {
            CallError::Timeout(_) => "timeout".into(),
            CallError::Status { status, .. } => format!("http_{status}"),
            CallError::Unauthorized => "unauthorized".into(),
            CallError::Unreachable(_) => "unreachable".into(),
            CallError::Malformed(_) => "malformed".into(),
            CallError::Empty => "empty".into(),
        }
    }

    /// Worth trying the same model again: timeouts, rate limits, server
    /// errors, garbled replies, network trouble. A rejected key or a bad
    /// request is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => *status == 429 || *status >= 500 || *status == 408,
            CallError::Unauthorized => false,
            _ => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl Provider {
    pub fn connect(settings: &ProviderSettings) -> Provider {
        // Local servers (Ollama, vLLM) take any key; rig wants one.
        let key = settings.api_key.expose().unwrap_or("no-key").to_string();
        let endpoint = settings.endpoint().trim_end_matches('/');
        match settings.kind {
            ProviderKind::Openai => Provider::OpenAi(Box::new(
                OpenAIConfig::new(key).with_base_url(endpoint).client(),
            )),
            ProviderKind::Anthropic => Provider::Anthropic(Box::new(
                AnthropicConfig::new(key).with_base_url(endpoint).client(),
            )),
        }
    }

    /// One attempt, bounded by `timeout`.
    pub async fn call(
        &self,
        model: &str,
        prompt: &Prompt<'_>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let request = CompletionRequest::new(prompt.prompt.to_string())
            .preamble(prompt.system.to_string())
            .max_tokens(prompt.max_tokens)
            .temperature(prompt.temperature)
            .output_schema(
                prompt
                    .reply_schema
                    .and_then(|schema| rig_core::schemars::Schema::try_from(schema.clone()).ok()),
            );
        // rig 0.44's `.completion()` speaks OpenAI's newer /responses
        // endpoint, which Ollama, vLLM and OpenRouter do not: use Chat.
        let sent = async {
            match self {
                Provider::OpenAi(client) => client.chat(model).call(request).await,
                Provider::Anthropic(client) => client.completion(model).call(request).await,
            }
        };
        let response: CompletionResponse = tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| CallError::Timeout(timeout.as_secs()))?
            .map_err(classify)?;
        // PostgreSQL text cannot hold NUL, and it shows as nothing anyway.
        let text = response.text().replace('\0', "");
        if text.trim().is_empty() {
            return Err(CallError::Empty);
        }
        let usage = response.usage;
        Ok(Reply {
            text,
            input_tokens: usage.input_tokens.unwrap_or(0),
            cached_input_tokens: usage.cached_input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
        })
    }
}

/// Sorts rig's errors into the ones the router acts on.
fn classify(error: rig_core::error::ProviderError) -> CallError {
    use rig_core::error::ProviderError as E;
    match error {
        E::InvalidAuthentication(_) => CallError::Unauthorized,
        E::ProviderResponse(reply) => match reply.status {
            Some(status) if matches!(status.as_u16(), 401 | 403) => CallError::Unauthorized,
            Some(status) => CallError::Status {
                status: status.as_u16(),
                detail: excerpt(&reply.body),
                retry_after: reply.headers.as_ref().and_then(retry_after),
            },
            None => CallError::Malformed(excerpt(&reply.body)),
        },
        E::Http(error) => CallError::Unreachable(excerpt(&error.to_string())),
        E::Json(error) => CallError::Malformed(excerpt(&error.to_string())),
        other => CallError::Malformed(excerpt(&other.to_string())),
    }
}

/// `retry-after` in seconds, capped (see [`crate::retry_after`]).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    crate::retry_after::parse(headers.get("retry-after")?.to_str().ok()?)
}

/// The first line of a provider's message, short enough for a chat message,
/// with any URL in it redacted: reqwest's errors quote the request URL, and
/// a self-hosted endpoint's URL can carry credentials. This text reaches the
/// chat and the run's journal.
fn excerpt(body: &str) -> String {
    let line = crate::config::redact_urls_in(body.lines().next().unwrap_or_default().trim());
    crate::domain::clip(&line, 160)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", value.parse().unwrap());
        headers
    }

    #[test]
    fn a_hostile_provider_retry_after_is_capped_not_a_panic() {
        assert_eq!(retry_after(&headers("1e20")), Some(crate::retry_after::MAX));
        assert_eq!(retry_after(&headers("inf")), Some(crate::retry_after::MAX));
        assert_eq!(retry_after(&headers("NaN")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
    }
}

//! The response cache: deterministic calls (temperature 0 or unset) answered
//! from memory, keyed on the model, the whole prompt and the parameters. A
//! hit costs nothing and makes no HTTP request.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::providers::{Prompt, Reply};
use crate::config::ModelRef;

#[derive(Clone)]
pub struct ResponseCache {
    entries: Cache<String, Arc<Reply>>,
}

impl ResponseCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        ResponseCache {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Only calls that should give the same answer twice are cached.
    pub fn is_cacheable(prompt: &Prompt<'_>) -> bool {
        prompt.temperature.is_none_or(|t| t == 0.0)
    }

    /// The full key, not a hash of it: no two prompts can ever collide.
    pub fn key(model: &ModelRef, prompt: &Prompt<'_>) -> String {
        format!(
            "{model}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{}",
            prompt.max_tokens, prompt.temperature, prompt.system, prompt.prompt
        )
    }

    pub async fn get(&self, key: &str) -> Option<Arc<Reply>> {
        self.entries.get(key).await
    }

    pub async fn insert(&self, key: String, reply: Reply) {
        self.entries.insert(key, Arc::new(reply)).await;
    }
}

//! Prompt token counts for the budget gate: exact with OpenAI's tokenizer
//! for the models it knows, a deliberately high estimate for the rest.

use crate::config::ProviderKind;

/// Tokens a chat request adds around its messages (roles, separators).
const FRAMING_TOKENS: u64 = 16;

/// The prompt's tokens, never fewer than the provider will count.
pub fn count_prompt_tokens(kind: ProviderKind, model: &str, texts: &[&str]) -> u64 {
    let tokenizer = match kind {
        ProviderKind::Openai => tiktoken_rs::bpe_for_model(model).ok(),
        ProviderKind::Anthropic => None,
    };
    let counted: u64 = match tokenizer {
        Some(bpe) => texts
            .iter()
            .map(|t| bpe.count_with_special_tokens(t) as u64)
            .sum(),
        None => texts.iter().map(|t| conservative_estimate(t)).sum(),
    };
    counted + FRAMING_TOKENS
}

/// One token per two bytes: English runs near four bytes a token and code
/// or non-Latin text near two to three, so this overestimates nearly
/// always, which is the safe side for a budget.
fn conservative_estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_openai_model_is_counted_exactly() {
        // "hello world" is two tokens in o200k_base.
        assert_eq!(
            count_prompt_tokens(ProviderKind::Openai, "gpt-4o-mini", &["hello world"]),
            2 + FRAMING_TOKENS
        );
    }

    #[test]
    fn an_unknown_model_gets_the_high_estimate() {
        let text = "hello world, this is a prompt";
        assert_eq!(
            count_prompt_tokens(ProviderKind::Anthropic, "claude-sonnet-4-5", &[text]),
            (text.len() as u64).div_ceil(2) + FRAMING_TOKENS
        );
    }
}

//! Prompt token counts for the budget gate: a deliberately high estimate
//! that needs nothing, and an exact count with OpenAI's tokenizer for the
//! models it knows (its tables cost tens of MiB, so the gate asks for it
//! only when the estimate is refused).

use crate::config::ProviderKind;

/// Tokens a chat request adds around its messages (roles, separators).
const FRAMING_TOKENS: u64 = 16;

/// One token per two bytes, plus framing: English runs near four bytes a
/// token and code or non-Latin text near two to three, so this
/// overestimates nearly always, which is the safe side for a budget.
pub fn conservative_prompt_tokens(texts: &[&str]) -> u64 {
    texts
        .iter()
        .map(|t| (t.len() as u64).div_ceil(2))
        .sum::<u64>()
        + FRAMING_TOKENS
}

/// The exact count, for a model whose tokenizer is known (OpenAI's).
pub fn count_prompt_tokens(kind: ProviderKind, model: &str, texts: &[&str]) -> Option<u64> {
    if kind != ProviderKind::Openai {
        return None;
    }
    let bpe = tiktoken_rs::bpe_for_model(model).ok()?;
    let counted: u64 = texts
        .iter()
        .map(|t| bpe.count_with_special_tokens(t) as u64)
        .sum();
    Some(counted + FRAMING_TOKENS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_openai_model_is_counted_exactly() {
        // "hello world" is two tokens in o200k_base.
        assert_eq!(
            count_prompt_tokens(ProviderKind::Openai, "gpt-4o-mini", &["hello world"]),
            Some(2 + FRAMING_TOKENS)
        );
    }

    #[test]
    fn other_models_have_no_exact_count() {
        assert_eq!(
            count_prompt_tokens(ProviderKind::Anthropic, "claude-sonnet-4-5", &["hi"]),
            None
        );
        assert_eq!(
            count_prompt_tokens(ProviderKind::Openai, "llama3.1", &["hi"]),
            None
        );
    }

    #[test]
    fn the_estimate_is_never_below_the_exact_count_for_english() {
        let text = include_str!("../../prompts/system.md");
        let exact = count_prompt_tokens(ProviderKind::Openai, "gpt-4o", &[text]).unwrap();
        assert!(conservative_prompt_tokens(&[text]) >= exact);
    }
}

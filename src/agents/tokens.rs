//! Prompt token counts for the budget gate: an upper bound that needs
//! nothing, and an exact count with OpenAI's tokenizer for the models it
//! knows (its tables cost tens of MiB, so the gate asks for it only when
//! the bound is refused). The exact count is the `exact-tokens` feature:
//! its tables are 7 MB of the binary, a fifth of it. Without it the gate
//! reserves by the bound alone, which can only refuse earlier, never
//! spend more.

use crate::config::ProviderKind;

/// Tokens a chat request adds around its messages (roles, separators).
const FRAMING_TOKENS: u64 = 16;

/// One token per byte, plus framing. This is a bound, not a guess: the
/// byte-level BPE tokenizers of OpenAI (tiktoken's cl100k, o200k, p50k,
/// r50k) and the others in use make every token from at least one byte of
/// UTF-8, so no text has more tokens than bytes. Cheaper per-character
/// rules are not bounds: a CJK character is three bytes and can be three
/// tokens, an emoji four, and a run of rare symbols one token per byte.
/// The exact count, when the gate needs it, is far lower for prose.
pub fn conservative_prompt_tokens(texts: &[&str]) -> u64 {
    texts.iter().map(|t| t.len() as u64).sum::<u64>() + FRAMING_TOKENS
}

/// The exact count, for a model whose tokenizer is known (OpenAI's).
#[cfg(feature = "exact-tokens")]
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

/// Without the `exact-tokens` feature no tokenizer is compiled in.
#[cfg(not(feature = "exact-tokens"))]
pub fn count_prompt_tokens(_kind: ProviderKind, _model: &str, _texts: &[&str]) -> Option<u64> {
    None
}

#[cfg(all(test, feature = "exact-tokens"))]
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

    /// Texts built to have many tokens per byte: CJK, emoji (with skin
    /// tones and joiners), long digit runs, rare symbols, mixed scripts,
    /// whitespace and punctuation runs, combining marks, special-token
    /// look-alikes.
    fn adversarial_texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "中文文本测试，这是一个很长的句子，包含许多汉字和标点符号。",
            "日本語のテキスト、ひらがなとカタカナと漢字。",
            "한국어 텍스트입니다",
            "👩🏽‍💻👨‍👩‍👧‍👦🏳️‍🌈🧑🏿‍🚀🫠🫥🪬🦩",
            "0123456789",
            "𓀀𓀁𓀂𓀃𓁐𓂀𐍈𐌰𐌱",
            "Z\u{0351}\u{0352}\u{0353}a\u{0301}\u{0302}\u{0303}l\u{0330}g\u{0331}o",
            "<|endoftext|><|im_start|><|fim_prefix|>",
            "!@#$%^&*()_+{}|:\"<>?~`-=[]\\;',./ \t\t\n\n",
            "ℵ∀∂∃∅∇∈∉∋∏∑−∓∔∕∖∗∘∙√∛∜∝∞∟∠",
            "ﷺﷻ﷽ꧠꧡꧢꧣ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        texts.push("9".repeat(5000));
        texts.push("31415926535897932384626433832795".repeat(100));
        texts.push("🫠".repeat(500));
        texts.push("龘".repeat(500));
        texts.push(" ".repeat(3000));
        texts.push("\u{10FFFD}\u{E000}\u{F8FF}".repeat(200));
        texts.push((0u32..0x3000).filter_map(char::from_u32).collect());
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");
        for dir in [fixtures, shared] {
            collect_texts(std::path::Path::new(dir), &mut texts);
        }
        texts
    }

    /// Every text file under `dir` (read at run time; `../shared` may be
    /// absent).
    fn collect_texts(dir: &std::path::Path, texts: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect_texts(&path, texts);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                texts.push(text);
            }
        }
    }

    #[test]
    fn the_estimate_is_an_upper_bound_for_cjk_emoji_digits_and_every_fixture() {
        let encoders = [
            ("o200k", tiktoken_rs::o200k_base().unwrap()),
            ("cl100k", tiktoken_rs::cl100k_base().unwrap()),
            ("p50k", tiktoken_rs::p50k_base().unwrap()),
            ("r50k", tiktoken_rs::r50k_base().unwrap()),
        ];
        for text in adversarial_texts() {
            let bound = conservative_prompt_tokens(&[&text]) - FRAMING_TOKENS;
            for (name, bpe) in &encoders {
                let exact = bpe.encode_ordinary(&text).len() as u64;
                let special = bpe.encode_with_special_tokens(&text).len() as u64;
                assert!(
                    bound >= exact.max(special),
                    "{name}: {} tokens but a bound of {bound} for {:?}",
                    exact.max(special),
                    crate::domain::clip(&text, 60)
                );
            }
        }
    }
}

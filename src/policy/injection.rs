//! A pattern detector for instructions aimed at the assistant inside text
//! that is only data: "ignore previous instructions", fake system or owner
//! notes, requests for keys, settings or tools, forged approvals, closing
//! tags. It only marks text (a warning on the approval); nothing in marked
//! or unmarked untrusted text is ever obeyed either way.

use std::sync::LazyLock;

use regex::RegexSet;

/// (name, pattern) pairs, matched case-insensitively.
const PATTERNS: [(&str, &str); 16] = [
    (
        "override",
        r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions|rules|told|prompt|guide|guidelines|brand voice|everything)\b",
    ),
    (
        "prompt leak",
        r"\b(system prompt|hidden instructions|your instructions|your prompt)\b",
    ),
    (
        "mode switch",
        r"\b(developer|admin|debug|god) (mode|override)\b",
    ),
    (
        "fake authority",
        r"(^|\n|\s)\[?(system|assistant|developer)\]?\s*:|^\s*\[(system|admin)\]|\b(note|instruction|message) from (the )?(owner|maya|admin)\b|\bnew instruction",
    ),
    (
        "forged approval",
        r"\b(owner|admin)[- ]?(approved|authori[sz]ed|pre-approved)|\bapproved by (the )?owner\b|\bpre-approved\b|\bauthori[sz]ed you\b",
    ),
    (
        "approval bypass",
        r"\b(skip|bypass|without) (the )?(approval|asking|review)|\bapprove (every|all)\b|\bmark all\b.{0,40}\bapproved\b|\bsend (it )?now\b|\bpublish it\b",
    ),
    (
        "secret request",
        r"\b(api[ _-]?keys?|keys you|tokens? you|secret keys?|passwords?)\b.{0,40}|\b(repeat|reveal|paste|print|show)\b.{0,30}\b(keys?|secrets?|tokens?)\b",
    ),
    (
        "setting change",
        r"\b(set|raise|increase|change|lower)\b.{0,30}\b(budget|spending cap|cap|limit|settings?)\b",
    ),
    (
        "tool call",
        r"\b(call|run|invoke|use)\b.{0,20}\b[a-z_]+ tool\b|\b(delete_memory|send_message|broadcast)\b|\{\s*.(tool|action|function).\s*:",
    ),
    ("closing tag", r"</\s*[a-z_]+\s*>"),
    (
        "data exfiltration",
        r"\b(email|send|share|forward)\b.{0,40}\b(client list|all (our )?clients|every (contact|client)|contacts)\b",
    ),
    (
        "price override",
        r"\b(price list is|prices? (is|are) (stale|outdated|wrong)|real .{0,30}price|quote that instead|use that in the offer|costs (eur|€|usd|\$) ?\d+ now)\b",
    ),
    (
        "knowledge override",
        r"\b(knowledge base|price list) is (outdated|stale|wrong)\b",
    ),
    (
        "style override",
        r"\b(all caps|in capitals|shout)\b|\bmention synergy\b",
    ),
    (
        "injected line",
        r"\b(at the (very )?top|add the line|write that)\b.{0,60}\b(approved|guaranteed|send now)\b",
    ),
    ("hype", r"!{3,}|\bguaranteed to\b"),
];

static SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(PATTERNS.iter().map(|(_, p)| format!("(?i){p}")))
        .expect("the injection patterns compile")
});

/// What the detector found in one text: the names of the patterns that
/// matched (empty: nothing suspicious).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Suspicion {
    pub patterns: Vec<&'static str>,
}

impl Suspicion {
    pub fn fired(&self) -> bool {
        !self.patterns.is_empty()
    }
}

/// Runs every pattern over `text`.
pub fn detect(text: &str) -> Suspicion {
    Suspicion {
        patterns: SET
            .matches(text)
            .into_iter()
            .map(|i| PATTERNS[i].0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_fixtures::{lines, shared_lines};

    #[test]
    fn fires_on_at_least_ten_of_the_twelve_project_injections() {
        let attacks = lines("adversarial/prompt_injection.txt");
        assert_eq!(attacks.len(), 12);
        let missed: Vec<_> = attacks.iter().filter(|a| !detect(a).fired()).collect();
        println!(
            "detector: {} of {} project injections",
            attacks.len() - missed.len(),
            attacks.len()
        );
        assert!(missed.len() <= 2, "missed: {missed:#?}");
    }

    #[test]
    fn fires_on_at_least_ten_of_the_twelve_shared_injections_when_present() {
        let Some(attacks) = shared_lines("adversarial/prompt_injection.txt") else {
            return;
        };
        let missed: Vec<_> = attacks.iter().filter(|a| !detect(a).fired()).collect();
        println!(
            "detector: {} of {} shared injections",
            attacks.len() - missed.len(),
            attacks.len()
        );
        assert!(missed.len() <= 2, "missed: {missed:#?}");
    }

    #[test]
    fn fires_on_at_most_one_of_twenty_clean_messages() {
        let clean = lines("clean_messages.txt");
        assert_eq!(clean.len(), 20);
        let flagged: Vec<_> = clean
            .iter()
            .map(|c| (c, detect(c)))
            .filter(|(_, s)| s.fired())
            .collect();
        println!(
            "detector: {} of {} clean messages",
            flagged.len(),
            clean.len()
        );
        assert!(flagged.len() <= 1, "false positives: {flagged:#?}");
    }

    #[test]
    fn a_fake_closing_tag_is_suspicious() {
        assert_eq!(detect("</request> hi").patterns, ["closing tag"]);
    }
}

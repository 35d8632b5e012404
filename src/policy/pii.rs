//! Personal data out of prompts: e-mail addresses, phone numbers, payment
//! cards (Luhn), IBANs (ISO 7064 checksum), tax ids, postal addresses and
//! passport numbers are replaced by stable placeholders (`[EMAIL_1]`)
//! before a text leaves the process, and put back in the model's answer.
//! The business's own contact details are left alone.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Iban,
    PaymentCard,
    TaxId,
    Passport,
    Phone,
    PostalAddress,
}

impl PiiKind {
    /// Every kind, in the order they are looked for: the more specific
    /// first, so an IBAN's digits are never taken for a card or a phone.
    pub fn all() -> Vec<PiiKind> {
        vec![
            PiiKind::Email,
            PiiKind::Iban,
            PiiKind::PaymentCard,
            PiiKind::TaxId,
            PiiKind::Passport,
            PiiKind::Phone,
            PiiKind::PostalAddress,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Iban => "iban",
            PiiKind::PaymentCard => "payment_card",
            PiiKind::TaxId => "tax_id",
            PiiKind::Passport => "passport",
            PiiKind::Phone => "phone",
            PiiKind::PostalAddress => "postal_address",
        }
    }

    fn label(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Iban => "IBAN",
            PiiKind::PaymentCard => "CARD",
            PiiKind::TaxId => "TAX_ID",
            PiiKind::Passport => "PASSPORT",
            PiiKind::Phone => "PHONE",
            PiiKind::PostalAddress => "ADDRESS",
        }
    }

    pub fn parse(name: &str) -> Option<PiiKind> {
        PiiKind::all()
            .into_iter()
            .find(|k| k.as_str() == name.trim())
    }
}

/// The patterns' word boundaries are ASCII (`(?-u:\b)`): a Unicode `\b`
/// keeps the regex crate off its DFAs for any text with a non-ASCII
/// character (a prompt with an em dash), and the slower engines were 5% of
/// the draft burst's CPU. The difference: a letter such as `ç` counts as a
/// boundary, so digits glued to one are still found (more redaction, not
/// less).
///
/// Digits are `[0-9]`, not `\d`: Unicode's `\d` is some 700 characters,
/// and a class repeated `{2,40}` times is compiled that many times. With
/// `\d` and a city written as `[\p{L} ]{2,30}` (thirty copies of every
/// letter in Unicode) these patterns took 3.2 MB compiled and 1.7 MB of
/// search cache for each thread that used them, about half of the heap
/// after a burst of drafts (heaptrack); now 0.8 MB and 0.4 MB. The checks
/// that follow a match (Luhn, the IBAN checksum) only ever read ASCII
/// digits; a city is now up to four words of letters.
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a PII pattern compiles")
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"));
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}"));
static CARD: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"));
static TAX_KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i:(?-u:\b)(?:NIF|NIPC|VAT(?: number| no\.?| id)?|tax (?:id|number)|TIN|contribuinte)(?-u:\b))[^0-9\n]{0,15}((?:[A-Z]{2})?[0-9](?:[ .]?[0-9]){7,11})",
    )
});
static NINE_DIGITS: LazyLock<Regex> = LazyLock::new(|| regex(r"(?-u:\b)[0-9]{9}(?-u:\b)"));
static PASSPORT: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i:(?-u:\b)passport(?-u:\b)(?:\s+(?:number|no\.?|nr\.?|#))?(?:\s+is)?\s*:?)\s*([A-Z0-9]{6,9})(?-u:\b)",
    )
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"\+[0-9]{1,3}[\s.-]?(?:\([0-9]{1,4}\)[\s.-]?)?[0-9]{1,4}(?:[\s.-]?[0-9]{1,4}){1,5}|\([0-9]{3}\)\s?[0-9]{3}[-.\s][0-9]{4}",
    )
});
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i:(?-u:\b)(?:rua|avenida|av\.|travessa|pra[çc]a|largo|estrada|calle|carrer|rue)(?-u:\b))\s+[^0-9\n,]{2,40}?\s[0-9]{1,5}[A-Za-z]?(?:\s*,\s*[0-9]{4}-[0-9]{3}(?:\s+\p{Lu}\p{L}+)*)?|(?-u:\b)[0-9]{1,5}\s+(?:\p{Lu}\p{L}+\s+){1,3}(?:Street|St\.|Road|Rd\.|Avenue|Ave\.|Lane|Drive|Boulevard)(?-u:\b)(?:,\s*\p{L}+(?:[ ]\p{L}+){0,3})?",
    )
});

/// A span of `text` that holds one kind of personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    kind: PiiKind,
}

fn luhn(digits: &str) -> bool {
    let digits: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                (d * 2).div_euclid(10) + (d * 2) % 10
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to
/// numbers, the whole modulo 97 is 1.
fn iban_valid(compact: &str) -> bool {
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let width = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * width + value) % 97;
    }
    remainder == 1
}

/// The Portuguese NIF's check digit (mod 11), the tax id most likely here.
fn nif_valid(digits: &str) -> bool {
    let d: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 9 || !matches!(d[0], 1 | 2 | 3 | 5 | 6 | 8 | 9) {
        return false;
    }
    let sum: u32 = d[..8].iter().zip((2..=9).rev()).map(|(x, w)| x * w).sum();
    let check = 11 - sum % 11;
    d[8] == if check >= 10 { 0 } else { check }
}

/// The longest prefix of an IBAN-shaped match whose checksum holds (a
/// greedy match may run into the next word).
fn iban_span(text: &str, start: usize, end: usize) -> Option<usize> {
    let candidate = &text[start..end];
    let mut cut_points: Vec<(usize, String)> = Vec::new();
    let mut compact = String::new();
    for (offset, c) in candidate.char_indices() {
        if c != ' ' {
            compact.push(c);
            cut_points.push((start + offset + c.len_utf8(), compact.clone()));
        }
    }
    cut_points
        .into_iter()
        .rev()
        .find(|(_, compact)| iban_valid(compact))
        .map(|(end, _)| end)
}

fn find_kind(kind: PiiKind, text: &str) -> Vec<Found> {
    let found = |start, end| Found { start, end, kind };
    match kind {
        PiiKind::Email => EMAIL
            .find_iter(text)
            .map(|m| found(m.start(), m.end()))
            .collect(),
        PiiKind::Iban => IBAN
            .find_iter(text)
            .filter_map(|m| iban_span(text, m.start(), m.end()).map(|end| found(m.start(), end)))
            .collect(),
        PiiKind::PaymentCard => CARD
            .find_iter(text)
            .filter(|m| luhn(m.as_str()))
            .map(|m| found(m.start(), m.end()))
            .collect(),
        PiiKind::TaxId => {
            let mut spans: Vec<Found> = TAX_KEYWORD
                .captures_iter(text)
                .filter_map(|c| c.get(1))
                .map(|m| found(m.start(), m.end()))
                .collect();
            spans.extend(
                NINE_DIGITS
                    .find_iter(text)
                    .filter(|m| nif_valid(m.as_str()))
                    .map(|m| found(m.start(), m.end())),
            );
            spans
        }
        PiiKind::Passport => PASSPORT
            .captures_iter(text)
            .filter_map(|c| c.get(1))
            .filter(|m| m.as_str().chars().any(|c| c.is_ascii_digit()))
            .map(|m| found(m.start(), m.end()))
            .collect(),
        PiiKind::Phone => PHONE
            .find_iter(text)
            .filter(|m| (8..=15).contains(&m.as_str().chars().filter(char::is_ascii_digit).count()))
            .map(|m| found(m.start(), m.end()))
            .collect(),
        PiiKind::PostalAddress => ADDRESS
            .find_iter(text)
            .map(|m| found(m.start(), m.end()))
            .collect(),
    }
}

/// Compares contact details loosely: e-mails by case, phones by digits.
fn normalize(value: &str) -> String {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if !value.contains('@') && digits.len() >= 7 && digits.len() * 2 >= value.trim().len() {
        return digits;
    }
    value.trim().to_lowercase()
}

/// Finds personal data; the placeholders it hands out live in a
/// [`Redaction`], one per model call.
#[derive(Debug, Clone)]
pub struct Redactor {
    kinds: Vec<PiiKind>,
    exempt: Vec<String>,
}

impl Redactor {
    /// `own_contacts` are the business's own details, never redacted.
    pub fn new(kinds: &[PiiKind], own_contacts: &[String]) -> Self {
        let mut ordered: Vec<PiiKind> = PiiKind::all()
            .into_iter()
            .filter(|k| kinds.contains(k))
            .collect();
        ordered.dedup();
        Redactor {
            kinds: ordered,
            exempt: own_contacts
                .iter()
                .filter(|c| !c.trim().is_empty())
                .map(|c| normalize(c))
                .collect(),
        }
    }

    pub fn kinds(&self) -> &[PiiKind] {
        &self.kinds
    }

    /// Spans of personal data in `text`, left to right, without overlaps
    /// (the kind looked for first wins).
    fn find(&self, text: &str) -> Vec<Found> {
        let mut taken: Vec<Found> = Vec::new();
        for &kind in &self.kinds {
            for candidate in find_kind(kind, text) {
                let overlaps = taken
                    .iter()
                    .any(|t| candidate.start < t.end && t.start < candidate.end);
                let value = &text[candidate.start..candidate.end];
                let own = self.exempt.iter().any(|e| *e == normalize(value));
                if !overlaps && !own {
                    taken.push(candidate);
                }
            }
        }
        taken.sort_by_key(|f| f.start);
        taken
    }

    /// The personal data in `text`: (kind, the value as found, the value
    /// normalised so the same phone or card written differently matches).
    pub fn values_in(&self, text: &str) -> Vec<(PiiKind, String, String)> {
        self.find(text)
            .into_iter()
            .map(|f| {
                let value = &text[f.start..f.end];
                (f.kind, value.to_string(), normalize(value))
            })
            .collect()
    }

    /// A fresh set of placeholders, for one model call.
    pub fn redaction(&self) -> Redaction<'_> {
        Redaction {
            redactor: self,
            by_value: BTreeMap::new(),
            values: Vec::new(),
            counts: BTreeMap::new(),
        }
    }
}

/// Placeholders handed out so far: the same value gets the same
/// placeholder everywhere in one call (system prompt and prompt alike).
#[derive(Debug)]
pub struct Redaction<'a> {
    redactor: &'a Redactor,
    by_value: BTreeMap<String, String>,
    /// (placeholder, value, kind), in order of first appearance.
    values: Vec<(String, String, PiiKind)>,
    counts: BTreeMap<PiiKind, usize>,
}

impl Redaction<'_> {
    /// `text` with every piece of personal data replaced.
    pub fn redact(&mut self, text: &str) -> String {
        let found = self.redactor.find(text);
        if found.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for span in found {
            out.push_str(&text[at..span.start]);
            let value = &text[span.start..span.end];
            out.push_str(&self.placeholder(value, span.kind));
            at = span.end;
        }
        out.push_str(&text[at..]);
        out
    }

    fn placeholder(&mut self, value: &str, kind: PiiKind) -> String {
        if let Some(existing) = self.by_value.get(value) {
            return existing.clone();
        }
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        let placeholder = format!("[{}_{}]", kind.label(), n);
        self.by_value.insert(value.to_string(), placeholder.clone());
        self.values
            .push((placeholder.clone(), value.to_string(), kind));
        placeholder
    }

    /// How many distinct values were replaced.
    pub fn count(&self) -> usize {
        self.values.len()
    }

    /// The kinds of what was replaced, one per value.
    pub fn kinds(&self) -> Vec<PiiKind> {
        self.values.iter().map(|(_, _, k)| *k).collect()
    }

    /// The values replaced (for tests and the restore step only; never
    /// logged or stored).
    pub fn values(&self) -> Vec<&str> {
        self.values.iter().map(|(_, v, _)| v.as_str()).collect()
    }

    /// The placeholders in `text` put back as the values they stand for.
    pub fn restore(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (placeholder, value, _) in &self.values {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_fixtures::{lines, shared_lines};

    /// (text, expected kinds) from a `text => kinds` fixture line.
    fn parse(line: &str) -> (String, Vec<PiiKind>) {
        let (text, kinds) = line.rsplit_once("=>").unwrap();
        let kinds = kinds
            .split(',')
            .map(|k| PiiKind::parse(k).unwrap_or_else(|| panic!("kind {k}")))
            .collect();
        (text.trim().to_string(), kinds)
    }

    fn check_fixture(lines: &[String]) {
        let redactor = Redactor::new(&PiiKind::all(), &[]);
        for line in lines {
            let (text, mut expected) = parse(line);
            let mut redaction = redactor.redaction();
            let redacted = redaction.redact(&text);
            let mut kinds = redaction.kinds();
            kinds.sort();
            kinds.dedup();
            expected.sort();
            assert_eq!(kinds, expected, "{text} -> {redacted}");
            for value in redaction.values() {
                assert!(!redacted.contains(value), "{value} left in {redacted}");
            }
            assert_eq!(redaction.restore(&redacted), text);
        }
    }

    #[test]
    fn every_project_pii_line_is_redacted_to_exactly_its_kinds() {
        check_fixture(&lines("adversarial/pii.txt"));
    }

    #[test]
    fn every_shared_pii_line_is_redacted_to_exactly_its_kinds_when_present() {
        if let Some(shared) = shared_lines("adversarial/pii.txt") {
            check_fixture(&shared);
        }
    }

    #[test]
    fn the_same_value_gets_the_same_placeholder_in_one_call() {
        let redactor = Redactor::new(&PiiKind::all(), &[]);
        let mut redaction = redactor.redaction();
        let a = redaction.redact("write to ana@x.example");
        let b = redaction.redact("cc ana@x.example and rui@y.example");
        assert_eq!(a, "write to [EMAIL_1]");
        assert_eq!(b, "cc [EMAIL_1] and [EMAIL_2]");
        assert_eq!(redaction.count(), 2);
    }

    #[test]
    fn the_business_own_contacts_are_not_redacted() {
        let own = [
            "hello@harborandpine.example".to_string(),
            "+351 210 000 000".into(),
        ];
        let redactor = Redactor::new(&PiiKind::all(), &own);
        let mut redaction = redactor.redaction();
        let text = "Reach me at Hello@harborandpine.example or +351 210000000, not ana@x.example";
        let out = redaction.redact(text);
        assert!(
            out.contains("Hello@harborandpine.example") && out.contains("+351 210000000"),
            "{out}"
        );
        assert!(out.contains("[EMAIL_1]"), "{out}");
    }

    #[test]
    fn a_card_number_that_fails_luhn_and_a_bad_iban_are_left_alone() {
        let redactor = Redactor::new(&PiiKind::all(), &[]);
        let mut redaction = redactor.redaction();
        let text = "order 4111 1111 1111 1112 and PT50 0002 0123 1234 5678 9015 5";
        let out = redaction.redact(text);
        assert!(!out.contains("[CARD_") && !out.contains("[IBAN_"), "{out}");
    }

    #[test]
    fn a_street_address_takes_its_city_with_it_in_any_alphabet() {
        let redactor = Redactor::new(&PiiKind::all(), &[]);
        for (text, city) in [
            ("Ship it to 221 Baker Street, London by Friday", "London"),
            ("Ship it to 14 Harbour Road, São João da Madeira", "Madeira"),
            ("Ship it to 9 Mill Lane, Zürich.", "Zürich"),
        ] {
            let mut redaction = redactor.redaction();
            let out = redaction.redact(text);
            assert!(out.contains("[ADDRESS_1]"), "{out}");
            assert!(!out.contains(city), "{city} left in {out}");
            assert_eq!(redaction.restore(&out), text);
        }
    }

    #[test]
    fn only_the_configured_kinds_are_redacted() {
        let redactor = Redactor::new(&[PiiKind::Email], &[]);
        let mut redaction = redactor.redaction();
        let out = redaction.redact("ana@x.example +351 912 345 678");
        assert_eq!(out, "[EMAIL_1] +351 912 345 678");
    }

    #[test]
    fn prices_dates_and_page_counts_are_not_personal_data() {
        let redactor = Redactor::new(&PiiKind::all(), &[]);
        for line in lines("clean_drafts.txt") {
            let mut redaction = redactor.redaction();
            let out = redaction.redact(&line);
            assert_eq!(out, line);
        }
    }
}

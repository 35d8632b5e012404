//! The business's own criteria for a lead, as deterministic rules over the
//! fields extracted from it: every point has a reason, so a tier can be
//! explained ("budget €6000 covers the smallest offer (€900): +30").

use serde::{Deserialize, Serialize};

/// `[leads.criteria]`: points per rule and the tier thresholds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Criteria {
    /// The smallest budget worth taking (the cheapest offer).
    pub min_budget_eur: f64,
    pub budget_points: i64,
    pub under_budget_points: i64,
    /// Words in the need that match what the business offers.
    pub fit_keywords: Vec<String>,
    pub fit_points: i64,
    /// Words in the need for work the business does not do.
    pub out_of_scope: Vec<String>,
    pub out_of_scope_points: i64,
    /// A stated timeline that is not vague.
    pub timeline_points: i64,
    /// Words that make a timeline or a need vague.
    pub vague_words: Vec<String>,
    pub vague_points: i64,
    /// Words asking for a special rate.
    pub discount_words: Vec<String>,
    pub discount_points: i64,
    /// A team of at least this many people.
    pub min_team_size: i64,
    pub team_points: i64,
    /// A team above this many people is beyond what the business serves
    /// (a one-person studio and a group of a thousand): these points
    /// instead of `team_points`. 0: no upper bound.
    pub max_team_size: i64,
    pub too_large_points: i64,
    /// Score at or above: hot; at or above `borderline_at`: borderline;
    /// below: cold.
    pub hot_at: i64,
    pub borderline_at: i64,
}

impl Default for Criteria {
    fn default() -> Self {
        let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect();
        Criteria {
            min_budget_eur: 900.0,
            budget_points: 30,
            under_budget_points: -40,
            fit_keywords: words(&[
                "brand", "identity", "logo", "website", "web site", "audit", "booking", "ux",
                "design", "retainer", "monthly",
            ]),
            fit_points: 30,
            out_of_scope: words(&[
                "online shop",
                "e-commerce",
                "ecommerce",
                "paid ads",
                "ads campaign",
                "equity",
                "crypto",
            ]),
            out_of_scope_points: -50,
            timeline_points: 20,
            vague_words: words(&["not sure", "next year", "someday", "some day", "might"]),
            vague_points: -10,
            discount_words: words(&["non-profit", "nonprofit", "charity", "discount"]),
            discount_points: -15,
            min_team_size: 10,
            team_points: 20,
            max_team_size: 250,
            too_large_points: -40,
            hot_at: 50,
            borderline_at: 15,
        }
    }
}

/// What the extract step found in a lead (every field optional: a lead
/// says what it says).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Extracted {
    pub name: Option<String>,
    pub company: Option<String>,
    pub email: Option<String>,
    /// In euros.
    pub budget: Option<f64>,
    pub timeline: Option<String>,
    pub need: Option<String>,
    pub website: Option<String>,
    /// People in the lead's team, when said.
    pub team_size: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Hot,
    Borderline,
    Cold,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Borderline => "borderline",
            Tier::Cold => "cold",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text.trim().to_ascii_lowercase().as_str() {
            "hot" => Some(Tier::Hot),
            "borderline" => Some(Tier::Borderline),
            "cold" => Some(Tier::Cold),
            _ => None,
        }
    }
}

/// A lead's score, tier and the reason for every point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub score: i64,
    pub tier: Tier,
    pub reasons: Vec<String>,
}

/// Scores `lead` by `criteria`. Pure: the same fields always give the same
/// tier.
pub fn score(lead: &Extracted, criteria: &Criteria) -> Scored {
    let mut total = 0;
    let mut reasons = Vec::new();
    let mut add = |points: i64, why: String| {
        total += points;
        reasons.push(format!("{why}: {points:+}"));
    };
    match lead.budget {
        Some(budget) if budget >= criteria.min_budget_eur => add(
            criteria.budget_points,
            format!(
                "budget €{budget:.0} covers the smallest offer (€{:.0})",
                criteria.min_budget_eur
            ),
        ),
        Some(budget) => add(
            criteria.under_budget_points,
            format!(
                "budget €{budget:.0} is under the smallest offer (€{:.0})",
                criteria.min_budget_eur
            ),
        ),
        None => add(0, "no budget stated".into()),
    }
    let need = lead.need.as_deref().unwrap_or_default().to_lowercase();
    let timeline = lead.timeline.as_deref().unwrap_or_default().to_lowercase();
    if let Some(word) = first_match(&need, &criteria.out_of_scope) {
        add(
            criteria.out_of_scope_points,
            format!("asks for {word}, which is not offered"),
        );
    } else if let Some(word) = first_match(&need, &criteria.fit_keywords) {
        add(
            criteria.fit_points,
            format!("the need ({word}) fits the offers"),
        );
    }
    let vague = first_match(&format!("{need} {timeline}"), &criteria.vague_words);
    if let Some(word) = vague {
        add(criteria.vague_points, format!("vague (\"{word}\")"));
    } else if !timeline.trim().is_empty() {
        add(
            criteria.timeline_points,
            format!("has a timeline ({})", timeline.trim()),
        );
    }
    if let Some(word) = first_match(&need, &criteria.discount_words) {
        add(
            criteria.discount_points,
            format!("asks for a special rate ({word})"),
        );
    }
    match lead.team_size {
        Some(size) if criteria.max_team_size > 0 && size > criteria.max_team_size => add(
            criteria.too_large_points,
            format!(
                "a team of {size}, more than the {} served",
                criteria.max_team_size
            ),
        ),
        Some(size) if size >= criteria.min_team_size => {
            add(criteria.team_points, format!("a team of {size}"))
        }
        _ => {}
    }
    let tier = if total >= criteria.hot_at {
        Tier::Hot
    } else if total >= criteria.borderline_at {
        Tier::Borderline
    } else {
        Tier::Cold
    };
    Scored {
        score: total,
        tier,
        reasons,
    }
}

fn first_match<'a>(text: &str, words: &'a [String]) -> Option<&'a str> {
    words
        .iter()
        .find(|w| !w.is_empty() && text.contains(&w.to_lowercase()))
        .map(String::as_str)
}

/// The first whole number in `text` ("12 people" → 12), thousands
/// separators read as such ("1,200 people" → 1200).
pub fn first_number(text: &str) -> Option<i64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut digits = String::new();
    let mut rest = &text[start..];
    loop {
        let run = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        digits.push_str(&rest[..run]);
        rest = &rest[run..];
        // "1,200" or "1 200": a separator followed by exactly three digits.
        let mut chars = rest.chars();
        match chars.next() {
            Some(',' | ' ' | '.') => {
                let group: String = chars.clone().take(3).collect();
                let after = chars.nth(3);
                let three = group.len() == 3 && group.chars().all(|c| c.is_ascii_digit());
                if three && !after.is_some_and(|c| c.is_ascii_digit()) {
                    rest = &rest[1..];
                    continue;
                }
                break;
            }
            _ => break,
        }
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(budget: Option<f64>, need: &str, timeline: &str, team: Option<i64>) -> Extracted {
        Extracted {
            budget,
            need: Some(need.into()),
            timeline: (!timeline.is_empty()).then(|| timeline.into()),
            team_size: team,
            ..Extracted::default()
        }
    }

    #[test]
    fn a_funded_fitting_lead_with_a_date_is_hot_and_says_why() {
        let scored = score(
            &lead(
                Some(6000.0),
                "rebrand with a Brand Sprint",
                "January",
                Some(12),
            ),
            &Criteria::default(),
        );
        assert_eq!(scored.tier, Tier::Hot);
        assert_eq!(scored.score, 100);
        assert!(
            scored.reasons[0].contains("€6000 covers"),
            "{:?}",
            scored.reasons
        );
    }

    #[test]
    fn a_budget_under_the_smallest_offer_makes_a_fitting_lead_cold() {
        let scored = score(
            &lead(Some(200.0), "a quick logo", "", Some(2)),
            &Criteria::default(),
        );
        assert_eq!(scored.tier, Tier::Cold);
    }

    #[test]
    fn work_that_is_not_offered_is_cold_whatever_the_timeline() {
        let scored = score(
            &lead(
                None,
                "online shop with payments and paid ads",
                "next week",
                Some(1),
            ),
            &Criteria::default(),
        );
        assert_eq!(scored.tier, Tier::Cold);
        assert!(scored.reasons.iter().any(|r| r.contains("online shop")));
    }

    #[test]
    fn a_vague_or_discounted_request_is_borderline() {
        let criteria = Criteria::default();
        let vague = score(
            &lead(
                None,
                "some design help, not sure what",
                "next year",
                Some(40),
            ),
            &criteria,
        );
        let charity = score(
            &lead(
                None,
                "a clearer identity; non-profit rate?",
                "spring",
                Some(8),
            ),
            &criteria,
        );
        assert_eq!(
            (vague.tier, charity.tier),
            (Tier::Borderline, Tier::Borderline)
        );
    }

    #[test]
    fn first_number_reads_a_team_size() {
        assert_eq!(first_number("12 people"), Some(12));
        assert_eq!(first_number("1,200 people"), Some(1200));
        assert_eq!(first_number("about 1 200 staff"), Some(1200));
        assert_eq!(first_number("3, 4 or 5 people"), Some(3));
        assert_eq!(first_number("12.5 people"), Some(12));
        assert_eq!(first_number("one person"), None);
    }

    #[test]
    fn a_group_far_larger_than_the_business_serves_is_cold_however_it_fits() {
        let scored = score(
            &lead(None, "a global rebrand across 14 markets", "", Some(1200)),
            &Criteria::default(),
        );
        assert_eq!(scored.tier, Tier::Cold, "{:?}", scored.reasons);
        assert!(
            scored
                .reasons
                .iter()
                .any(|r| r.contains("more than the 250 served")),
            "{:?}",
            scored.reasons
        );
    }
}

//! `soloist eval leads FILE.jsonl`: each line a lead in the fixture format
//! (`message`, `name`, `company`, …, `expected_tier`) runs through the
//! configured fast tier's extraction and the scoring rules; prints tier
//! accuracy and a confusion table.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::Tier;
use super::steps::{extract_schema, quoted_lead, read_extraction, score_output};
use crate::agents::ModelCall;
use crate::app::App;
use crate::config::Settings;
use crate::flows::{CostLabel, Prompts};

const TIERS: [Tier; 3] = [Tier::Hot, Tier::Borderline, Tier::Cold];

/// Expected and predicted tiers, one pair per lead.
#[derive(Debug, Default)]
pub struct Report {
    pub pairs: Vec<(Tier, Tier)>,
    /// Lines skipped (no `expected_tier`, unreadable) or whose model call failed.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn accuracy(&self) -> f64 {
        if self.pairs.is_empty() {
            return 0.0;
        }
        let right = self.pairs.iter().filter(|(e, p)| e == p).count();
        right as f64 / self.pairs.len() as f64
    }

    fn count(&self, expected: Tier, predicted: Tier) -> usize {
        self.pairs
            .iter()
            .filter(|pair| **pair == (expected, predicted))
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let right = self.pairs.iter().filter(|(e, p)| e == p).count();
        writeln!(
            f,
            "tier accuracy: {:.1}% ({right}/{})",
            self.accuracy() * 100.0,
            self.pairs.len()
        )?;
        writeln!(f, "expected \\ predicted   hot  borderline  cold")?;
        for expected in TIERS {
            writeln!(
                f,
                "{:<22}{:>4}{:>12}{:>6}",
                expected.as_str(),
                self.count(expected, Tier::Hot),
                self.count(expected, Tier::Borderline),
                self.count(expected, Tier::Cold)
            )?;
        }
        for skipped in &self.skipped {
            writeln!(f, "skipped: {skipped}")?;
        }
        Ok(())
    }
}

/// The CLI: opens the app (the model calls land in the cost ledger), runs
/// every line and prints the report.
pub async fn cli(settings: Settings, home: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let app = App::build(settings, home).await?;
    let prompts = Prompts::load(home)?;
    let report = evaluate(&app, &prompts, &text).await;
    println!("{report}");
    app.store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Runs each JSON line through extraction and scoring.
pub async fn evaluate(app: &App, prompts: &Prompts, jsonl: &str) -> Report {
    let mut report = Report::default();
    for (number, line) in jsonl
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let lead: Value = match serde_json::from_str(line) {
            Ok(lead) => lead,
            Err(error) => {
                report.skipped.push(format!("line {}: {error}", number + 1));
                continue;
            }
        };
        let Some(expected) = lead
            .get("expected_tier")
            .and_then(Value::as_str)
            .and_then(Tier::parse)
        else {
            report
                .skipped
                .push(format!("line {}: no expected_tier", number + 1));
            continue;
        };
        match predict(app, prompts, &lead).await {
            Ok(predicted) => report.pairs.push((expected, predicted)),
            Err(error) => report.skipped.push(format!("line {}: {error}", number + 1)),
        }
    }
    report
}

async fn predict(app: &App, prompts: &Prompts, lead: &Value) -> Result<Tier, String> {
    let settings = &app.settings;
    let values = json!({
        "business": settings.business,
        "brand_voice": settings.brand_voice,
        "offers": settings.offers,
        "policy": settings.policy,
        "request": "",
        "outputs": {},
        "lead": quoted_lead(lead),
    });
    let system = prompts
        .render("system", &values)
        .map_err(|e| e.to_string())?;
    let prompt = prompts
        .render("lead_extract", &values)
        .map_err(|e| e.to_string())?;
    let call = ModelCall {
        tier: crate::flows::Tier::Fast,
        label: CostLabel::LowCost,
        system,
        prompt,
        max_tokens: 400,
        temperature: Some(0.0),
        run_id: None,
        flow: Some("eval-leads".into()),
        step: Some("extract".into()),
        reply_schema: Some(extract_schema()),
        redacted_items: 0,
    };
    let completion = app
        .engine
        .agents()
        .complete(&call)
        .await
        .map_err(|e| e.to_string())?;
    let mut lead_fields = lead.clone();
    // The fixture format keeps the team size at the top level.
    if let Some(size) = lead.get("size") {
        lead_fields["fields"] = json!({ "size": size });
    }
    let extracted = read_extraction(&completion.text, &lead_fields);
    let (_, scored) = score_output(&extracted, &settings.leads.criteria);
    Ok(scored.tier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confusion_table_counts_each_expected_and_predicted_pair() {
        let report = Report {
            pairs: vec![
                (Tier::Hot, Tier::Hot),
                (Tier::Cold, Tier::Borderline),
                (Tier::Cold, Tier::Cold),
                (Tier::Borderline, Tier::Borderline),
            ],
            skipped: vec![],
        };
        let text = report.to_string();
        assert!(text.contains("tier accuracy: 75.0% (3/4)"), "{text}");
        assert!(
            text.contains("cold                     0           1     1"),
            "{text}"
        );
    }
}

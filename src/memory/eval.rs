//! `soloist eval retrieval FILE.tsv`: how well retrieval finds the expected
//! source for the operator's own questions. The file has a header line,
//! then `question<TAB>expected` per line, where `expected` is a file name
//! (`offers.md`) or a citation prefix (`offers.md § Brand Sprint`).

use std::time::Instant;

use super::{Hit, Memory, MemoryError};

#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_3: f64,
    pub mrr: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Questions whose expected source was not in the top 3.
    pub misses: Vec<String>,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "questions  {}", self.questions)?;
        writeln!(f, "recall@1   {:.3}", self.recall_at_1)?;
        writeln!(f, "recall@3   {:.3}", self.recall_at_3)?;
        writeln!(f, "MRR        {:.3}", self.mrr)?;
        writeln!(f, "p50        {:.2} ms", self.p50_ms)?;
        write!(f, "p95        {:.2} ms", self.p95_ms)?;
        for miss in &self.misses {
            write!(f, "\nmissed     {miss}")?;
        }
        Ok(())
    }
}

/// (question, expected) pairs; the header and blank lines are skipped.
pub fn parse_questions(tsv: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (n, line) in tsv.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let Some((question, expected)) = line.split_once('\t') else {
            return Err(format!(
                "line {}: expected question<TAB>expected_source",
                n + 1
            ));
        };
        pairs.push((question.trim().to_string(), expected.trim().to_string()));
    }
    Ok(pairs)
}

/// Whether `hit` is what `expected` names.
pub fn matches(hit: &Hit, expected: &str) -> bool {
    hit.label == expected || hit.source == expected || hit.citation().starts_with(expected)
}

pub async fn evaluate(
    memory: &Memory,
    questions: &[(String, String)],
) -> Result<EvalReport, MemoryError> {
    let mut ranks = Vec::new();
    let mut times = Vec::new();
    let mut misses = Vec::new();
    for (question, expected) in questions {
        let started = Instant::now();
        let hits = memory.retrieve(question, 10).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let rank = hits
            .iter()
            .position(|h| matches(h, expected))
            .map(|i| i + 1);
        if rank.is_none_or(|r| r > 3) {
            misses.push(format!("{question} (expected {expected})"));
        }
        ranks.push(rank);
    }
    let n = questions.len().max(1) as f64;
    let within = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    times.sort_by(f64::total_cmp);
    Ok(EvalReport {
        questions: questions.len(),
        recall_at_1: within(1),
        recall_at_3: within(3),
        mrr: ranks
            .iter()
            .map(|r| r.map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / n,
        p50_ms: percentile(&times, 0.50),
        p95_ms: percentile(&times, 0.95),
        misses,
    })
}

/// The `q` percentile of sorted `values` (nearest rank); 0 when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

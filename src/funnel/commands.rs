//! `/result RUN views=1200 clicks=40` and the digest's comparison of a
//! post's numbers with earlier posts'.

use std::collections::BTreeMap;

use crate::domain::{InputPurpose, JournalEvent, RunId, RunStatus};
use crate::store::{Store, StoreError, Tx};

/// How many earlier posts the digest averages over.
const COMPARE_WITH: i64 = 10;

/// Parses `views=1200 clicks=40` into (metric, value) pairs, or says what
/// is wrong with it.
pub fn parse_metrics(args: &str) -> Result<Vec<(String, f64)>, String> {
    let mut metrics = Vec::new();
    for pair in args.split_whitespace() {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("'{pair}' is not name=number (e.g. views=1200)."));
        };
        let name = name.trim().to_lowercase();
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!(
                "'{name}' is not a metric name (letters, digits, _)."
            ));
        }
        let value: f64 = value
            .replace(',', "")
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("'{value}' is not a number for {name}."))?;
        metrics.push((name, value));
    }
    if metrics.is_empty() {
        return Err(
            "Give the numbers as name=number, e.g. /result RUN views=1200 clicks=40.".into(),
        );
    }
    Ok(metrics)
}

/// Stores the run's numbers; the sentence to answer with.
pub async fn record_results(
    store: &Store,
    run_id: RunId,
    args: &str,
) -> Result<String, StoreError> {
    let metrics = match parse_metrics(args) {
        Ok(metrics) => metrics,
        Err(problem) => return Ok(problem),
    };
    let mut tx = store.begin().await?;
    for (metric, value) in &metrics {
        tx.record_result(run_id, metric, *value).await?;
    }
    tx.commit().await?;
    let shown: Vec<String> = metrics
        .iter()
        .map(|(m, v)| format!("{} {m}", number(*v)))
        .collect();
    Ok(format!(
        "Stored for run {}: {}. The digest compares it with earlier posts.",
        run_id.short(),
        shown.join(", ")
    ))
}

/// The digest's lines: the latest post with numbers, each metric against
/// the average of up to ten earlier posts that reported it.
pub async fn results_lines(store: &Store) -> Result<Vec<String>, StoreError> {
    let rows = store.published_results(COMPARE_WITH + 1).await?;
    let mut with_numbers = rows.into_iter().filter(|r| !r.metrics.is_empty());
    let Some(latest) = with_numbers.next() else {
        return Ok(Vec::new());
    };
    let earlier: Vec<BTreeMap<String, f64>> = with_numbers
        .map(|r| r.metrics.into_iter().collect())
        .collect();
    let mut lines = Vec::new();
    for (metric, value) in &latest.metrics {
        let past: Vec<f64> = earlier
            .iter()
            .filter_map(|m| m.get(metric).copied())
            .collect();
        let line = if past.is_empty() {
            format!(
                "{} {metric} (no earlier post to compare with)",
                number(*value)
            )
        } else {
            let average = past.iter().sum::<f64>() / past.len() as f64;
            let change = if average > 0.0 {
                format!(", {:+.0}%", (value - average) / average * 100.0)
            } else {
                String::new()
            };
            format!(
                "{} {metric} vs {} on average over {} earlier post(s){change}",
                number(*value),
                number(average),
                past.len()
            )
        };
        lines.push(line);
    }
    lines.insert(
        0,
        format!("Latest post with results: run {}", latest.run_id.short()),
    );
    Ok(lines)
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Hands a publish step its time from a button press: the run waits for
/// exactly that (its latest request is a publish-time one), or nothing
/// happens. Journaled like typed input.
pub async fn deliver_publish_time_in(
    tx: &mut Tx,
    run_id: RunId,
    when: &str,
    by: &str,
) -> Result<bool, StoreError> {
    let step = match tx.latest_request(run_id).await? {
        Some(JournalEvent::InputRequested {
            step,
            purpose: InputPurpose::PublishTime,
        }) => step,
        _ => return Ok(false),
    };
    if !tx
        .move_run(run_id, RunStatus::WaitingInput, RunStatus::Runnable, None)
        .await?
    {
        return Ok(false);
    }
    tx.set_input_from(run_id, None).await?;
    let event = JournalEvent::InputReceived {
        step,
        purpose: InputPurpose::PublishTime,
        text: when.to_string(),
        by: by.to_string(),
    };
    tx.append_events(run_id, &[event]).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_metrics("views=1200 Clicks=40").unwrap(),
            [("views".to_string(), 1200.0), ("clicks".to_string(), 40.0)]
        );
        assert!(parse_metrics("views").unwrap_err().contains("views"));
        assert!(parse_metrics("views=lots").unwrap_err().contains("lots"));
        assert!(parse_metrics("").is_err());
    }
}

//! `/cost`: today's and this month's spend against the budget, by flow and
//! by model, from the ledger, and the reservations given back unsettled
//! (a call that died, or one the sweeper found after a crash).

use std::fmt::Write;

use chrono::{NaiveDate, TimeZone, Utc};

use super::ControllerError;
use crate::engine::Engine;
use crate::store::{CostGroup, CostLine};

/// The report, ready to send.
pub async fn report(engine: &Engine) -> Result<String, ControllerError> {
    let settings = engine.settings();
    let timezone = settings.timezone().unwrap_or(chrono_tz::UTC);
    let budget = engine.agents().budget();
    let (day, month) = budget.periods();
    let (today, this_month) = budget.status().await?;
    let store = engine.store();
    let day_start = local_midnight_ms(timezone, &day);
    let month_start = local_midnight_ms(timezone, &format!("{month}-01"));
    let today_summary = store.cost_since(day_start).await?;

    let mut text = format!(
        "Spend today ({day}, {}): ${:.4} of ${:.2}, {} call(s)",
        settings.business.timezone, today.spent_usd, today.cap_usd, today_summary.calls
    );
    if today.reserved_usd > 0.0 {
        let _ = write!(
            text,
            ", ${:.4} reserved by calls in flight",
            today.reserved_usd
        );
    }
    let _ = write!(
        text,
        "\nThis month ({month}): ${:.4} of ${:.2}",
        this_month.spent_usd, this_month.cap_usd
    );
    let released = store.released_reservations_since(month_start).await?;
    if released.abandoned + released.swept > 0 {
        let _ = write!(
            text,
            "\nReservations released unsettled this month: {} abandoned (${:.4}), {} swept (${:.4})",
            released.abandoned, released.abandoned_usd, released.swept, released.swept_usd
        );
    }
    let month_summary = store.cost_since(month_start).await?;
    if month_summary.batched > 0 {
        let _ = write!(
            text,
            "\nBatched this month: {} call(s), saved ${:.4}",
            month_summary.batched, month_summary.saved_usd
        );
    }
    for (title, group) in [("By flow", CostGroup::Flow), ("By model", CostGroup::Model)] {
        let lines = store.cost_by(group, month_start).await?;
        if lines.is_empty() {
            continue;
        }
        let _ = write!(text, "\n{title} this month:");
        for line in lines {
            let _ = write!(text, "\n  {}", describe(&line));
        }
    }
    Ok(text)
}

fn describe(line: &CostLine) -> String {
    let mut text = format!(
        "{}: ${:.4}, {} call(s)",
        line.name, line.cost_usd, line.calls
    );
    if line.cache_hits > 0 {
        let _ = write!(text, ", {} from cache", line.cache_hits);
    }
    if line.blocked > 0 {
        let _ = write!(text, ", {} blocked by the budget", line.blocked);
    }
    text
}

/// Unix milliseconds of 00:00 on `date` (YYYY-MM-DD) in `timezone`.
fn local_midnight_ms(timezone: chrono_tz::Tz, date: &str) -> i64 {
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|midnight| timezone.from_local_datetime(&midnight).earliest())
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .unwrap_or(0)
}

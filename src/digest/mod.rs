//! The daily digest: what ran yesterday, what waits, what it cost against
//! the caps, how often the owner stepped in, and any missed schedule tick.
//! Every number is a SQL aggregate ([`crate::store`]'s digest queries);
//! the text is `prompts/digest.md` rendered with minijinja — never written
//! by a model — and the chart is drawn in process ([`chart`]).
//!
//! The digest is a flow (`config/flows/digest.toml`): its steps
//! (`digest_numbers`, `digest_render`, `digest_summary`, `digest_deliver`,
//! in `engine/digest_steps.rs`) call the functions here. The `digest`
//! schedule and `/digest` start it; `soloist digest --now` calls [`build`].

pub mod chart;
pub mod summary;
pub mod usage;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::domain::{ApprovalRole, ChatRef, Image, Outbound, Platform};
use crate::store::{CostLine, DigestSql, Store, StoreError, Window};

pub use chart::{ChartData, ChartError};

const TEMPLATE: &str = include_str!("../../prompts/digest.md");

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DigestSettings {
    /// "platform:chat_id" entries; empty: the owner's private chats.
    pub chats: Vec<String>,
    pub chart_days: u32,
    /// A one-paragraph summary by the fast tier above the numbers
    /// ([`summary`]); off by default.
    pub summary: bool,
}

impl Default for DigestSettings {
    fn default() -> Self {
        DigestSettings {
            chats: Vec::new(),
            chart_days: 14,
            summary: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the digest template prompts/digest.md is broken")]
    Template(#[source] minijinja::Error),
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error("'{0}' is not a time zone name")]
    TimeZone(String),
    #[error(transparent)]
    Prompt(#[from] crate::flows::PromptError),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    pub name: String,
    pub calls: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedRun {
    pub id: String,
    pub flow: String,
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissLine {
    pub schedule: String,
    pub ticks: i64,
    pub first: String,
    pub last: String,
    pub action: String,
}

/// Every number the digest shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DigestNumbers {
    pub business: String,
    pub timezone: String,
    /// Yesterday, the day reported, local.
    pub date: String,
    pub completed: i64,
    pub failed: i64,
    pub failed_runs: Vec<FailedRun>,
    pub waiting: i64,
    pub approvals_open: i64,
    pub cost_yesterday: f64,
    pub daily_cap: f64,
    pub cost_month: f64,
    pub monthly_cap: f64,
    pub yesterday_by_flow: Vec<Line>,
    pub month_by_flow: Vec<Line>,
    pub month_by_model: Vec<Line>,
    pub calls: i64,
    pub cache_hits: i64,
    /// Percent of yesterday's calls served from the cache.
    pub cache_hit_rate: f64,
    pub cache_saved_usd: f64,
    pub batch_saved_usd: f64,
    pub tiers: Vec<Line>,
    pub approved: i64,
    pub edited: i64,
    pub rejected: i64,
    pub decisions_total: i64,
    /// Percent of decisions over 7 days that were edits or rejections.
    pub intervention_rate: f64,
    pub misses: Vec<MissLine>,
    /// Drafts offered that day that cited knowledge, and the top sources.
    pub retrieval: usage::RetrievalUse,
    /// Guardrail flags that day by kind (and blocked or limited requests).
    pub guardrail_flags: Vec<usage::Count>,
    /// FUNNEL: the latest post's reported numbers against earlier posts'.
    pub posts: Vec<String>,
}

/// A built digest: the text, the chart, and the open approvals' offers.
#[derive(Debug, Clone)]
pub struct Digest {
    pub numbers: DigestNumbers,
    pub text: String,
    pub chart_png: Vec<u8>,
    pub approvals: Vec<Outbound>,
}

impl Digest {
    /// The messages to send: the text with the chart, then each open
    /// approval with its buttons.
    pub fn messages(&self) -> Vec<Outbound> {
        messages(
            &self.text,
            &self.numbers.date,
            &self.chart_png,
            &self.approvals,
        )
    }
}

/// The digest's messages: `text` with the chart (named for the day
/// reported), then each open approval with its buttons.
pub fn messages(text: &str, date: &str, chart_png: &[u8], approvals: &[Outbound]) -> Vec<Outbound> {
    let mut main = Outbound::text(text.to_string());
    main.image = Some(Image {
        file_name: format!("digest-{date}.png"),
        png_base64: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, chart_png),
    });
    std::iter::once(main)
        .chain(approvals.iter().cloned())
        .collect()
}

/// The business's time zone, which decides what "yesterday" is.
pub fn timezone(settings: &Settings) -> Result<Tz, DigestError> {
    settings
        .business
        .timezone
        .parse()
        .map_err(|_| DigestError::TimeZone(settings.business.timezone.clone()))
}

/// The chart of the `digest.chart_days` days before `now`, as a PNG.
pub async fn chart_png(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, DigestError> {
    let data = chart_data(store, settings, timezone(settings)?, now).await?;
    Ok(chart::render_png(&data)?)
}

/// Each open approval offered again, with its buttons.
pub async fn open_approvals(store: &Store) -> Result<Vec<Outbound>, StoreError> {
    Ok(store
        .pending_approvals()
        .await?
        .into_iter()
        .map(|a| {
            Outbound::text(format!(
                "Waiting for your decision (run {}):\n\n{}",
                a.run_id.short(),
                a.draft
            ))
            .with_buttons(a.buttons)
            .linked_to(a.id, ApprovalRole::Offer)
        })
        .collect())
}

/// Builds the digest for the local day before `now` (what the digest
/// flow's steps do, in one call: for `soloist digest --now` and tests).
pub async fn build(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Digest, DigestError> {
    let numbers = numbers(store, settings, timezone(settings)?, now).await?;
    let text = render(&numbers)?;
    let chart_png = chart_png(store, settings, now).await?;
    let approvals = open_approvals(store).await?;
    Ok(Digest {
        numbers,
        text,
        chart_png,
        approvals,
    })
}

/// The digest's numbers, from SQL aggregates.
pub async fn numbers(
    store: &Store,
    settings: &Settings,
    timezone: Tz,
    now: DateTime<Utc>,
) -> Result<DigestNumbers, StoreError> {
    let today = now.with_timezone(&timezone).date_naive();
    let yesterday_date = today - Duration::days(1);
    let yesterday = Window {
        from: local_midnight(timezone, yesterday_date),
        to: local_midnight(timezone, today),
    };
    let month_start = today.with_day(1).unwrap_or(today);
    let month = Window {
        from: local_midnight(timezone, month_start),
        to: now.timestamp_millis(),
    };
    let week = Window {
        from: now.timestamp_millis() - Duration::days(7).num_milliseconds(),
        to: now.timestamp_millis(),
    };

    let finished = store.finished_runs(yesterday).await?;
    let count = |rows: &[(String, i64)], key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let failed_runs = store
        .failed_runs(yesterday, 10)
        .await?
        .into_iter()
        .map(|(id, flow, summary)| FailedRun { id, flow, summary })
        .collect();
    let waiting = store.waiting_runs().await?.iter().map(|(_, n)| n).sum();
    let yesterday_by_flow = store.cost_lines(yesterday, DigestSql::Flow).await?;
    let tiers = store.cost_lines(yesterday, DigestSql::Tier).await?;
    let month_by_flow = store.cost_lines(month, DigestSql::Flow).await?;
    let month_by_model = store.cost_lines(month, DigestSql::Model).await?;
    let (cache_saved_usd, batch_saved_usd) = store.cache_and_batch_savings(yesterday).await?;
    let decisions = store.decision_counts(week).await?;
    let calls: i64 = yesterday_by_flow.iter().map(|l| l.calls).sum();
    let cache_hits: i64 = yesterday_by_flow.iter().map(|l| l.cache_hits).sum();
    let (approved, edited, rejected) = (
        count(&decisions, "approve"),
        count(&decisions, "edit"),
        count(&decisions, "reject"),
    );
    let decisions_total = approved + edited + rejected;
    // Misses detected since yesterday began, up to when this is built: a
    // digest fired late (or on time after downtime) is built after its
    // tick, and the misses its own fire recorded belong in it.
    let misses = store
        .schedule_misses(yesterday.from, i64::MAX)
        .await?
        .into_iter()
        .map(|m| MissLine {
            schedule: m.schedule,
            ticks: m.ticks,
            first: local_text(timezone, m.first_tick),
            last: local_text(timezone, m.last_tick),
            action: m.action,
        })
        .collect();
    Ok(DigestNumbers {
        business: settings.business.name.clone(),
        timezone: settings.business.timezone.clone(),
        date: yesterday_date.to_string(),
        completed: count(&finished, "completed"),
        failed: count(&finished, "failed"),
        failed_runs,
        waiting,
        approvals_open: store.pending_approvals().await?.len() as i64,
        cost_yesterday: sum_cost(&yesterday_by_flow),
        daily_cap: settings.policy.daily_budget_usd,
        cost_month: sum_cost(&month_by_flow),
        monthly_cap: settings.policy.monthly_budget_usd,
        yesterday_by_flow: lines(yesterday_by_flow),
        month_by_flow: lines(month_by_flow),
        month_by_model: lines(month_by_model),
        calls,
        cache_hits,
        cache_hit_rate: percent(cache_hits, calls),
        cache_saved_usd,
        batch_saved_usd,
        tiers: lines(tiers),
        approved,
        edited,
        rejected,
        decisions_total,
        intervention_rate: percent(edited + rejected, decisions_total),
        misses,
        retrieval: usage::retrieval_use(store, yesterday).await?,
        guardrail_flags: usage::guardrail_flags(store, yesterday).await?,
        posts: crate::funnel::results_lines(store).await?,
    })
}

/// The chart's data: the `digest.chart_days` local days up to yesterday.
pub async fn chart_data(
    store: &Store,
    settings: &Settings,
    timezone: Tz,
    now: DateTime<Utc>,
) -> Result<ChartData, StoreError> {
    let today = now.with_timezone(&timezone).date_naive();
    let days = i64::from(settings.digest.chart_days.clamp(1, 92));
    let dates: Vec<NaiveDate> = (0..=days)
        .map(|i| today - Duration::days(days - i))
        .collect();
    let boundaries: Vec<i64> = dates.iter().map(|d| local_midnight(timezone, *d)).collect();
    let mut flows: Vec<(String, Vec<f64>)> = Vec::new();
    for cost in store.daily_cost_by_flow(&boundaries).await? {
        let index = match flows.iter().position(|(f, _)| *f == cost.flow) {
            Some(index) => index,
            None => {
                flows.push((cost.flow.clone(), vec![0.0; days as usize]));
                flows.len() - 1
            }
        };
        if let Some(slot) = flows[index].1.get_mut(cost.day) {
            *slot += cost.cost_usd;
        }
    }
    let decisions = store
        .decision_counts(Window {
            from: boundaries[0],
            to: now.timestamp_millis(),
        })
        .await?;
    Ok(ChartData {
        days: dates[..days as usize]
            .iter()
            .map(|d| d.format("%m-%d").to_string())
            .collect(),
        flows,
        daily_cap_usd: settings.policy.daily_budget_usd,
        decisions,
    })
}

/// The digest text from `prompts/digest.md` (compiled in).
pub fn render(numbers: &DigestNumbers) -> Result<String, DigestError> {
    let mut env = minijinja::Environment::new();
    env.add_template("digest", TEMPLATE)
        .map_err(DigestError::Template)?;
    env.get_template("digest")
        .and_then(|t| t.render(minijinja::value::Serde(numbers)))
        .map(|text| text.trim().to_string())
        .map_err(DigestError::Template)
}

/// Where a scheduled digest goes: `digest.chats`, or the owner's private
/// chat on each platform where the owner's account is known. A Discord DM
/// needs its channel id, which only Discord can give: [`owner_chats_now`]
/// asks for it.
pub fn owner_chats(settings: &Settings) -> Vec<ChatRef> {
    if !settings.digest.chats.is_empty() {
        return settings
            .digest
            .chats
            .iter()
            .filter_map(|entry| {
                let (platform, chat) = entry.split_once(':')?;
                Some(ChatRef::new(
                    platform.trim().parse::<Platform>().ok()?,
                    chat.trim(),
                ))
            })
            .collect();
    }
    let mut chats = Vec::new();
    if settings.telegram.token.is_set() && !settings.owner.telegram_user_id.is_empty() {
        // A Telegram user's private chat has the user's id.
        chats.push(ChatRef::new(
            Platform::Telegram,
            settings.owner.telegram_user_id.clone(),
        ));
    }
    chats
}

/// [`owner_chats`], plus the owner's Discord DM when no digest chat is
/// configured and the owner's Discord account is known (its channel asked
/// of Discord: `POST /users/@me/channels`). Err when Discord could not be
/// reached: the fire is tried again next tick. A refusal is logged and
/// Discord left out, so the other platforms still get their digest.
pub async fn owner_chats_now(settings: &Settings) -> Result<Vec<ChatRef>, String> {
    let mut chats = owner_chats(settings);
    let owner = settings.owner.discord_user_id.trim();
    if !settings.digest.chats.is_empty() || !settings.discord.token.is_set() || owner.is_empty() {
        return Ok(chats);
    }
    match crate::adapters::discord::dm_channel(&settings.discord, owner).await {
        Ok(channel) => chats.push(ChatRef::new(Platform::Discord, channel)),
        Err(refused @ crate::adapters::discord::DmError::Refused(_)) => {
            tracing::warn!(error = %refused, "the digest goes without its Discord copy");
        }
        Err(error) => return Err(error.to_string()),
    }
    Ok(chats)
}

/// The digest now, for `soloist digest --now`; its text from `prompts`, so
/// an operator's copy of `prompts/digest.md` wins, as in the flow.
pub async fn build_now(
    store: &Store,
    settings: &Settings,
    prompts: &crate::flows::Prompts,
) -> Result<Digest, DigestError> {
    let now = crate::scheduler::Clock::now(&crate::scheduler::DatabaseClock(store.clone())).await?;
    let mut digest = build(store, settings, now).await?;
    // A plain struct of numbers and strings: it always serializes.
    let values = serde_json::to_value(&digest.numbers).unwrap_or_default();
    digest.text = prompts.render("digest", &values)?.trim().to_string();
    Ok(digest)
}

fn lines(lines: Vec<CostLine>) -> Vec<Line> {
    lines
        .into_iter()
        .map(|l| Line {
            name: l.name,
            calls: l.calls,
            cost_usd: l.cost_usd,
        })
        .collect()
}

/// The lines' total. Not `Iterator::sum`: for floats it starts from -0.0
/// (IEEE's neutral element), which an empty day prints as "$-0.0000".
fn sum_cost(lines: &[CostLine]) -> f64 {
    lines.iter().fold(0.0, |total, l| total + l.cost_usd)
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Unix ms of 00:00 on `date` in `timezone` (the first 00:00 if repeated,
/// the end of the gap if skipped).
pub fn local_midnight(timezone: Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    timezone
        .from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            timezone
                .from_local_datetime(&(midnight + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| midnight.and_utc().timestamp_millis())
}

fn local_text(timezone: Tz, ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| {
            t.with_timezone(&timezone)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// The instant a digest run reports on (the local day before it): the
/// run's request when it is a time, which is how a schedule asks for its
/// tick ([`crate::scheduler`] gives a schedule without `input` its tick,
/// RFC 3339); None for `/digest`, which reports on now.
pub fn requested_time(request: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(request.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_with_no_spend_prints_as_zero_not_minus_zero() {
        assert_eq!(format!("{:.4}", sum_cost(&[])), "0.0000");
    }
}

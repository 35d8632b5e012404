//! Built-in housekeeping jobs, fired by `[schedules.*]` entries like any
//! other schedule (config/default.toml registers them; each can be changed
//! or disabled there).
//!
//! Housekeeping differs from the digest or a flow in two ways, both so a
//! frequent job does not flood anything: its missed ticks are not
//! recorded (after downtime it simply runs once, late; the digest reports
//! only misses someone would care about), and `prune_schedule_history`
//! forgets fire rows past `scheduler.keep_history_days`.

use std::sync::Arc;

use crate::agents::Agents;
use crate::domain::Platform;
use crate::memory::Memory;
use crate::store::PendingFire;

use super::{Job, JobContext, JobOutput};

/// The housekeeping jobs by name; `agents` (the engine's) enables the
/// reservation sweeper.
pub fn jobs(agents: Option<Agents>) -> Vec<(&'static str, Arc<dyn Job>)> {
    let mut jobs: Vec<(&'static str, Arc<dyn Job>)> = vec![
        ("purge_working_memory", Arc::new(PurgeWorkingMemory)),
        ("prune_payloads", Arc::new(PrunePayloads)),
        ("refresh_urls", Arc::new(RefreshUrls)),
        ("prune_schedule_history", Arc::new(PruneScheduleHistory)),
        (
            "follow_up_leads",
            Arc::new(crate::leads::follow_up::FollowUpLeads),
        ),
        ("publish_posts", Arc::new(PublishPosts)),
    ];
    if let Some(agents) = agents {
        jobs.push(("sweep_reservations", Arc::new(SweepReservations(agents))));
    }
    jobs
}

/// FUNNEL: scheduled posts due by now go out, each once (a post for "now"
/// goes out at once, without waiting for this; see
/// [`crate::funnel::publish_at_once`]). Housekeeping: a minutely job's
/// missed ticks after downtime are one late run, not a digest line.
struct PublishPosts;

#[async_trait::async_trait]
impl Job for PublishPosts {
    async fn run(&self, context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let published = crate::funnel::publish_due(&context.store, &context.settings, context.now)
            .await
            .map_err(|e| e.to_string())?;
        Ok(JobOutput {
            published,
            ..JobOutput::default()
        })
    }

    fn housekeeping(&self) -> bool {
        true
    }
}

fn memory(context: &JobContext) -> Memory {
    Memory::from_settings(context.store.clone(), &context.settings)
}

/// Working memory past its expiry.
struct PurgeWorkingMemory;

#[async_trait::async_trait]
impl Job for PurgeWorkingMemory {
    async fn run(&self, context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let purged = memory(context)
            .purge_expired(context.now.timestamp_millis())
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(purged, "expired working memory purged");
        Ok(JobOutput::default())
    }

    fn housekeeping(&self) -> bool {
        true
    }
}

/// Raw platform payloads past `keep_payload_hours` (the rows stay for the
/// polling offset and deduplication).
struct PrunePayloads;

#[async_trait::async_trait]
impl Job for PrunePayloads {
    async fn run(&self, context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let now = context.now.timestamp_millis();
        let hours = |h: u32| i64::from(h) * 3600 * 1000;
        let settings = &context.settings;
        for (platform, keep) in [
            (Platform::Telegram, settings.telegram.keep_payload_hours),
            (Platform::Discord, settings.discord.keep_payload_hours),
        ] {
            context
                .store
                .forget_payloads(platform, now - hours(keep))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(JobOutput::default())
    }

    fn housekeeping(&self) -> bool {
        true
    }
}

/// Knowledge ingested from URLs, fetched again.
struct RefreshUrls;

#[async_trait::async_trait]
impl Job for RefreshUrls {
    async fn run(&self, context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let refreshed = memory(context)
            .refresh_urls()
            .await
            .map_err(|e| e.to_string())?;
        for (url, outcome) in refreshed {
            if let Err(error) = outcome {
                tracing::warn!(%url, %error, "refreshing a URL failed; the old text stays");
            }
        }
        Ok(JobOutput::default())
    }

    fn housekeeping(&self) -> bool {
        true
    }
}

/// Budget reservations a crashed process left held.
struct SweepReservations(Agents);

#[async_trait::async_trait]
impl Job for SweepReservations {
    async fn run(&self, _context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let swept = self
            .0
            .sweep_reservations()
            .await
            .map_err(|e| e.to_string())?;
        if !swept.is_empty() {
            tracing::info!(
                count = swept.len(),
                "abandoned budget reservations released"
            );
        }
        Ok(JobOutput::default())
    }

    fn housekeeping(&self) -> bool {
        true
    }
}

/// Fire and miss rows older than `scheduler.keep_history_days`.
struct PruneScheduleHistory;

#[async_trait::async_trait]
impl Job for PruneScheduleHistory {
    async fn run(&self, context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let keep = i64::from(context.settings.scheduler.keep_history_days.max(1));
        let before = context.now.timestamp_millis() - keep * 24 * 3600 * 1000;
        context
            .store
            .prune_schedule_history(before)
            .await
            .map_err(|e| e.to_string())?;
        Ok(JobOutput::default())
    }

    fn housekeeping(&self) -> bool {
        true
    }
}

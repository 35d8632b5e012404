//! Cron schedules kept in the database. A due tick becomes a fire row keyed
//! on `(schedule, scheduled_for)` (and on the local date for once-a-day
//! schedules), so two processes, a restart or a clock jump never fire it
//! twice; ticks missed while nothing ran are handled by the schedule's
//! catch-up policy and recorded, never dropped silently.
//!
//! What is due is decided by one [`Clock`]: production reads the
//! database's time (one clock for every process sharing it), tests set a
//! [`ManualClock`] by hand.
//!
//! A fire names a target: a built-in [`Job`] (purge, prune, sweeper,
//! scheduled post delivery) or a flow (the daily digest is the `digest`
//! flow), started as a run whose idempotency key is the fire's key. A
//! schedule without `input` asks its flow for the tick it fires for: the
//! run's request is the tick's time (RFC 3339).
//!
//! At start ([`Scheduler::sync_config`]) the rows follow what is declared:
//! a schedule nothing declares any more (a flow file that dropped
//! `schedule`, a config entry removed or `enabled = false`) is retired.

pub mod commands;
pub mod housekeeping;
mod settings;
mod timetable;

pub use settings::{CatchUp, FlowSchedule, FlowScheduleTable, ScheduleConfig, SchedulerSettings};
pub use timetable::{Tick, Timetable, TimetableError};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Settings;
use crate::domain::{ChatRef, Outbound};
use crate::engine::{Engine, StartRun};
use crate::store::{
    DueSchedule, FirePlan, MissRecord, PendingFire, ScheduleRow, Store, StoreError,
};

/// How long a process holds a fire while its job runs; a process that died
/// in a job leaves the fire to the next tick after this.
const FIRE_LEASE_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("schedule '{name}' is invalid")]
    Invalid {
        name: String,
        #[source]
        source: TimetableError,
    },
}

/// The one source of "now" for deciding what is due.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + std::fmt::Debug {
    async fn now(&self) -> Result<DateTime<Utc>, StoreError>;
}

/// The database's clock: every process sharing the database agrees on it.
#[derive(Debug, Clone)]
pub struct DatabaseClock(pub Store);

#[async_trait::async_trait]
impl Clock for DatabaseClock {
    async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        let ms = self.0.database_now_ms().await?;
        Ok(Utc
            .timestamp_millis_opt(ms)
            .single()
            .unwrap_or_else(Utc::now))
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(now)))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(*self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What one due fire produced: messages to queue (in the transaction that
/// marks the fire done) and the run it started, if any.
#[derive(Debug, Default)]
pub struct JobOutput {
    pub messages: Vec<(ChatRef, Outbound)>,
    pub run_id: Option<String>,
    /// FUNNEL: posts the `publish_posts` job published.
    pub published: usize,
}

/// Who a scheduled run says asked for it (`schedule NAME`).
const REQUESTED_BY_SCHEDULE: &str = "schedule ";

/// Whether a run was started by a schedule (not by someone in a chat), from
/// its `requested_by`: the digest then goes to the owner.
pub fn started_by_schedule(requested_by: &str) -> bool {
    requested_by.starts_with(REQUESTED_BY_SCHEDULE)
}

/// Context a job runs with.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub now: DateTime<Utc>,
}

/// A built-in scheduled job (purge, prune, sweeper and post delivery jobs
/// register here by name).
#[async_trait::async_trait]
pub trait Job: Send + Sync {
    async fn run(&self, context: &JobContext, fire: &PendingFire) -> Result<JobOutput, String>;

    /// Housekeeping (purges, prunes, sweeps): its missed ticks are not
    /// recorded, so a frequent job never floods the digest after downtime;
    /// it just runs once, late (or not, with `catch_up = "skip"`).
    fn housekeeping(&self) -> bool {
        false
    }
}

/// What one tick did, for the log and the tests.
#[derive(Debug, Default)]
pub struct TickReport {
    /// (schedule, tick) pairs that fired this time.
    pub fired: Vec<(String, i64)>,
    pub missed: Vec<MissRecord>,
    /// Fires whose job ran (this tick's and leftovers of earlier ones).
    pub completed: usize,
    /// FUNNEL: posts published this tick (by the `publish_posts` job).
    pub published: usize,
}

#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    settings: Arc<Settings>,
    engine: Option<Engine>,
    clock: Arc<dyn Clock>,
    jobs: Arc<HashMap<String, Arc<dyn Job>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.jobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with the built-in jobs. `engine` starts flow targets;
    /// without it only jobs can fire.
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        engine: Option<Engine>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut jobs: HashMap<String, Arc<dyn Job>> = HashMap::new();
        let agents = engine.as_ref().map(|engine| engine.agents().clone());
        for (name, job) in housekeeping::jobs(agents) {
            jobs.insert(name.into(), job);
        }
        Scheduler {
            store,
            settings,
            engine,
            clock,
            jobs: Arc::new(jobs),
        }
    }

    /// Adds a job by name (purge, prune, sweeper…), replacing one of the
    /// same name.
    pub fn with_job(mut self, name: &str, job: Arc<dyn Job>) -> Self {
        Arc::make_mut(&mut self.jobs).insert(name.to_string(), job);
        self
    }

    fn is_housekeeping(&self, target: &str) -> bool {
        self.jobs.get(target).is_some_and(|job| job.housekeeping())
    }

    /// Writes the schedules of the config file and the flow files into the
    /// database, and retires the ones nothing declares any more.
    pub async fn sync_config(&self) -> Result<(), SchedulerError> {
        let now = self.clock.now().await?.timestamp_millis();
        let mut declared = self.sync_config_schedules(now).await?;
        declared.extend(self.sync_flow_schedules(now).await?);
        if self.engine.is_none() {
            // Without the flows it cannot tell a flow's schedule from a
            // stale one: it keeps every row the config does not turn off.
            for row in self.store.schedules().await? {
                if !self.settings.schedules.contains_key(&row.name) {
                    declared.push(row.name);
                }
            }
        }
        let retired = self.store.retire_schedules(&declared, now).await?;
        if !retired.is_empty() {
            tracing::info!(schedules = ?retired, "schedules nothing declares any more are retired");
        }
        Ok(())
    }

    /// The `[schedules.*]` of the config; returns the names in use.
    async fn sync_config_schedules(&self, now: i64) -> Result<Vec<String>, SchedulerError> {
        let mut declared = Vec::new();
        for (name, config) in &self.settings.schedules {
            if !config.enabled {
                continue;
            }
            let timezone = config.timezone_or(&self.settings.business.timezone);
            Timetable::parse(&config.cron, &timezone).map_err(|source| {
                SchedulerError::Invalid {
                    name: name.clone(),
                    source,
                }
            })?;
            let def = DueSchedule {
                name: name.clone(),
                cron: config.cron.clone(),
                timezone,
                target: config.target(name).to_string(),
                input: config.input.clone(),
                catch_up: config.catch_up.as_str().to_string(),
            };
            self.store.define_schedule(&def, now).await?;
            declared.push(name.clone());
        }
        Ok(declared)
    }

    /// Writes the schedules flow files declare (`schedule = "…"`), each
    /// named like its flow and starting it. A `[schedules.NAME]` of the
    /// same name in the config wins. Returns the names written.
    async fn sync_flow_schedules(&self, now: i64) -> Result<Vec<String>, SchedulerError> {
        let mut declared = Vec::new();
        let Some(engine) = &self.engine else {
            return Ok(declared);
        };
        let flows = engine.flows();
        for name in flows.names() {
            let Some(schedule) = flows.get(name).and_then(|f| f.schedule.as_ref()) else {
                continue;
            };
            if self.settings.schedules.contains_key(name) {
                tracing::warn!(flow = %name, "the config's [schedules.{name}] replaces the flow file's schedule");
                continue;
            }
            let table = schedule.table();
            let timezone = if table.timezone.trim().is_empty() {
                self.settings.business.timezone.clone()
            } else {
                table.timezone.clone()
            };
            Timetable::parse(&table.cron, &timezone).map_err(|source| SchedulerError::Invalid {
                name: name.to_string(),
                source,
            })?;
            let def = DueSchedule {
                name: name.to_string(),
                cron: table.cron.clone(),
                timezone,
                target: name.to_string(),
                input: table.input.clone(),
                catch_up: table.catch_up.as_str().to_string(),
            };
            self.store.define_schedule(&def, now).await?;
            declared.push(name.to_string());
        }
        Ok(declared)
    }

    /// Plans every due schedule, then runs the jobs of pending fires.
    pub async fn tick(&self) -> Result<TickReport, SchedulerError> {
        let now = self.clock.now().await?;
        let grace = chrono::Duration::seconds(self.settings.scheduler.grace_secs as i64);
        let planned = self
            .store
            .claim_due_schedules(now.timestamp_millis(), |row| {
                let mut plan = plan(row, now, grace);
                if self.is_housekeeping(&row.target) {
                    plan.miss = None;
                }
                plan
            })
            .await?;
        let mut report = TickReport::default();
        for (schedule, applied) in planned {
            if let Some((at, _, _)) = applied.fire {
                report.fired.push((schedule.name.clone(), at));
            }
            if let Some(miss) = applied.miss {
                tracing::warn!(
                    schedule = %schedule.name, ticks = miss.ticks, action = %miss.action,
                    "schedule ticks were missed while soloist was not running"
                );
                report.missed.push(MissRecord {
                    schedule: schedule.name.clone(),
                    ..miss
                });
            }
        }
        let (completed, published) = self.run_pending(now).await?;
        report.completed = completed;
        report.published = published;
        Ok(report)
    }

    /// Runs the job of every pending fire; a failed job stays pending and
    /// is tried again next tick. Returns the fires completed and the posts
    /// published.
    async fn run_pending(&self, now: DateTime<Utc>) -> Result<(usize, usize), SchedulerError> {
        let context = JobContext {
            store: self.store.clone(),
            settings: self.settings.clone(),
            now,
        };
        let mut completed = 0;
        let mut published = 0;
        // The clock is the database's (or the test's), and a job longer
        // than this is retried by another process: the digest's and a
        // flow start's effects are keyed on the fire, housekeeping is
        // idempotent.
        for fire in self.store.pending_fires().await? {
            // Another process may be running this fire's job right now:
            // only the holder of the claim runs it.
            if !self
                .store
                .claim_fire(&fire, now.timestamp_millis(), FIRE_LEASE_MS)
                .await?
            {
                continue;
            }
            // The fire's span: its log lines (and a flow run's, which adds
            // the run id) carry the schedule and the tick.
            let span =
                tracing::info_span!("fire", schedule = %fire.name, tick = fire.scheduled_for);
            let output = match self.jobs.get(&fire.target) {
                Some(job) => job.run(&context, &fire).instrument(span).await,
                None => self.start_flow(&fire).instrument(span).await,
            };
            match output {
                Ok(output) => {
                    published += output.published;
                    let done = self
                        .store
                        .complete_fire(
                            &fire,
                            output.run_id.as_deref(),
                            &output.messages,
                            now.timestamp_millis(),
                        )
                        .await?;
                    completed += usize::from(done);
                }
                Err(error) => {
                    tracing::error!(schedule = %fire.name, %error, "a scheduled job failed; trying again next tick");
                    self.store.release_fire(&fire).await?;
                }
            }
        }
        Ok((completed, published))
    }

    /// A flow target: a run keyed on the fire, so a retry after a crash
    /// finds the same run instead of starting another.
    async fn start_flow(&self, fire: &PendingFire) -> Result<JobOutput, String> {
        let Some(engine) = &self.engine else {
            return Err(format!("no engine to start flow '{}'", fire.target));
        };
        let chat = crate::digest::owner_chats(&self.settings)
            .into_iter()
            .next()
            .unwrap_or_else(|| ChatRef::new(crate::domain::Platform::Console, "console"));
        let run = engine
            .start(StartRun {
                flow: fire.target.clone(),
                chat,
                request: run_request(fire),
                requested_by: format!("{REQUESTED_BY_SCHEDULE}{}", fire.name),
                idempotency_key: format!("schedule:{}:{}", fire.schedule_id, fire.scheduled_for),
            })
            .await
            .map_err(|e| e.to_string())?;
        if let Err(error) = engine.drive(run).await {
            tracing::warn!(%run, error = ?error, "driving a scheduled run failed; the worker resumes it");
        }
        Ok(JobOutput {
            run_id: Some(run.to_string()),
            ..JobOutput::default()
        })
    }

    /// `soloist run`'s scheduler: syncs the config, then ticks every
    /// `scheduler.tick_secs` until shutdown.
    pub async fn service(self, shutdown: CancellationToken) -> Result<(), String> {
        if let Err(error) = self.sync_config().await {
            return Err(format!(
                "the schedules in the config are not valid: {error}"
            ));
        }
        let every = Duration::from_secs(self.settings.scheduler.tick_secs.max(1));
        loop {
            match self.tick().await {
                Ok(report) if !report.fired.is_empty() => {
                    tracing::info!(fired = ?report.fired, "schedules fired")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = ?error, "schedule tick failed; will try again")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// A scheduled run's request: the schedule's `input`, or without one the
/// tick it fires for (RFC 3339), which the digest reports on.
fn run_request(fire: &PendingFire) -> String {
    if !fire.input.trim().is_empty() {
        return fire.input.clone();
    }
    Utc.timestamp_millis_opt(fire.scheduled_for)
        .single()
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `soloist run`'s scheduler service on the database clock.
pub fn service(app: &crate::app::App, shutdown: CancellationToken) -> crate::runtime::Service {
    let scheduler = Scheduler::new(
        app.store.clone(),
        app.settings.clone(),
        Some(app.engine.clone()),
        Arc::new(DatabaseClock(app.store.clone())),
    );
    Box::pin(scheduler.service(shutdown))
}

/// Decides what a due schedule does at `now`. Pure: the store applies it.
pub fn plan(row: &ScheduleRow, now: DateTime<Utc>, grace: chrono::Duration) -> FirePlan {
    let timetable = match Timetable::parse(&row.cron, &row.timezone) {
        Ok(timetable) => timetable,
        Err(error) => {
            // Stored by chat with a check, so only a hand edit gets here;
            // keep it from being claimed every tick.
            tracing::error!(schedule = %row.name, %error, "schedule is invalid; it will not fire");
            return FirePlan {
                next_fire_at: Some(i64::MAX),
                ..FirePlan::default()
            };
        }
    };
    let next_after_now = timetable.next_after(now).map(|t| t.at.timestamp_millis());
    let Some(next) = row.next_fire_at else {
        return FirePlan {
            next_fire_at: next_after_now,
            ..FirePlan::default()
        };
    };
    let due = due_ticks(&timetable, next, now);
    let Some(last) = due.last else {
        return FirePlan {
            next_fire_at: next_after_now,
            ..FirePlan::default()
        };
    };
    let on_time = now - last.at <= grace;
    let late_count = due.count - i64::from(on_time);
    let catch_up = row.catch_up.parse().unwrap_or(CatchUp::Once);
    let fire_last = on_time || catch_up == CatchUp::Once;
    let fire = fire_last.then(|| {
        (
            last.at.timestamp_millis(),
            last.local_date.map(|d| d.to_string()),
            !on_time,
        )
    });
    let miss = (late_count > 0).then(|| MissRecord {
        schedule: row.name.clone(),
        first_tick: due.first.timestamp_millis(),
        last_tick: if on_time {
            due.before_last.unwrap_or(due.first).timestamp_millis()
        } else {
            last.at.timestamp_millis()
        },
        ticks: late_count,
        action: match catch_up {
            CatchUp::Once => "caught_up",
            CatchUp::Skip => "skipped",
        }
        .into(),
        detected_at: now.timestamp_millis(),
    });
    FirePlan {
        fire,
        miss,
        next_fire_at: next_after_now,
    }
}

struct DueTicks {
    first: DateTime<Utc>,
    before_last: Option<DateTime<Utc>>,
    last: Option<Tick>,
    count: i64,
}

/// The most ticks one plan walks; a minutely schedule down for two months
/// still counts exactly.
const MAX_DUE_TICKS: i64 = 100_000;

/// Ticks in `[next, now]`.
fn due_ticks(timetable: &Timetable, next: i64, now: DateTime<Utc>) -> DueTicks {
    let start = Utc.timestamp_millis_opt(next - 1).single().unwrap_or(now);
    let mut due = DueTicks {
        first: now,
        before_last: None,
        last: None,
        count: 0,
    };
    let mut cursor = timetable.next_after(start);
    while let Some(tick) = cursor {
        if tick.at > now || due.count >= MAX_DUE_TICKS {
            break;
        }
        if due.count == 0 {
            due.first = tick.at;
        }
        due.before_last = due.last.map(|t| t.at);
        due.last = Some(tick);
        due.count += 1;
        cursor = timetable.next_after(tick.at);
    }
    due
}

//! Schedules with a clock the test moves: a tick fires once, whatever
//! races it (a second process, a restart, a clock jump); missed ticks
//! follow the catch-up policy and are recorded; daylight-saving days fire
//! once each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, Utc};
use soloist::config::Settings;
use soloist::scheduler::{
    CatchUp, Job, JobContext, JobOutput, ManualClock, ScheduleConfig, Scheduler,
};
use soloist::store::{PendingFire, Store};

use crate::helpers::{Db, TestApp, TestDb, button, drain, test_settings, texts};
use crate::on_both_backends;

on_both_backends!(
    a_due_tick_fires_once,
    a_restart_during_a_due_tick_fires_it_once,
    a_clock_jump_back_never_fires_a_tick_again,
    downtime_across_two_ticks_with_catch_up_once_fires_one_late_run_and_reports_the_miss,
    downtime_across_two_ticks_with_catch_up_skip_fires_nothing_and_reports_the_miss,
    the_spring_forward_day_fires_once,
    the_fall_back_day_fires_once,
    a_paused_schedule_does_not_fire_and_resuming_does_not_catch_up,
    the_pause_button_pauses_once_and_the_resume_button_resumes,
    a_due_housekeeping_tick_runs_its_job_once_and_its_misses_stay_out_of_the_digest,
    fire_rows_past_the_retention_are_pruned_by_the_history_job,
    the_scheduled_digest_is_one_run_of_the_digest_flow_queued_once_with_its_chart,
    an_operator_copy_of_the_digest_flow_changes_the_digest,
    downtime_across_two_digest_ticks_sends_one_digest_that_reports_the_miss,
    a_flow_that_drops_its_schedule_loses_its_schedule_row_at_start,
    a_schedule_the_config_turns_off_is_retired_at_start,
);

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Counts the fires it runs; fails the first `fail_first` of them.
#[derive(Default)]
struct CountingJob {
    runs: AtomicUsize,
    fail_first: usize,
    housekeeping: bool,
}

#[async_trait::async_trait]
impl Job for CountingJob {
    async fn run(&self, _: &JobContext, _: &PendingFire) -> Result<JobOutput, String> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err("the process died mid-job".into());
        }
        Ok(JobOutput::default())
    }

    fn housekeeping(&self) -> bool {
        self.housekeeping
    }
}

struct Harness {
    db: TestDb,
    store: Store,
    settings: Arc<Settings>,
    clock: ManualClock,
}

impl Harness {
    /// One schedule named "job" with this cron, zone and policy, and the
    /// digest going to the console.
    async fn new(db: Db, cron: &str, timezone: &str, catch_up: CatchUp, start: &str) -> Harness {
        let db = TestDb::create(db).await;
        let store = Store::open(&db.url, 4).await.unwrap();
        let mut settings = test_settings(None);
        settings.schedules.clear();
        settings.schedules.insert(
            "job".into(),
            ScheduleConfig {
                cron: cron.into(),
                timezone: timezone.into(),
                catch_up,
                target: "counting".into(),
                input: String::new(),
                enabled: true,
            },
        );
        settings.digest.chats = vec!["console:console".into()];
        let harness = Harness {
            db,
            store,
            settings: Arc::new(settings),
            clock: ManualClock::at(utc(start)),
        };
        let scheduler = harness.scheduler(Arc::new(CountingJob::default()));
        scheduler.sync_config().await.unwrap();
        // The first tick only plans the next fire time.
        let report = scheduler.tick().await.unwrap();
        assert!(report.fired.is_empty());
        harness
    }

    fn scheduler(&self, job: Arc<CountingJob>) -> Scheduler {
        self.scheduler_on(self.store.clone(), job)
    }

    fn scheduler_on(&self, store: Store, job: Arc<CountingJob>) -> Scheduler {
        Scheduler::new(
            store,
            self.settings.clone(),
            None,
            Arc::new(self.clock.clone()),
        )
        .with_job("counting", job)
    }

    async fn fired(&self) -> Vec<DateTime<Utc>> {
        self.store
            .fired_ticks("job")
            .await
            .unwrap()
            .into_iter()
            .map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
            .collect()
    }
}

async fn a_due_tick_fires_once(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob::default());
    let scheduler = h.scheduler(job.clone());

    h.clock.set(utc("2027-01-10T07:59:59Z"));
    assert!(scheduler.tick().await.unwrap().fired.is_empty());
    for now in [
        "2027-01-10T08:00:05Z",
        "2027-01-10T08:00:20Z",
        "2027-01-10T09:00:00Z",
    ] {
        h.clock.set(utc(now));
        scheduler.tick().await.unwrap();
    }

    assert_eq!(h.fired().await, [utc("2027-01-10T08:00:00Z")]);
    assert_eq!(job.runs.load(Ordering::SeqCst), 1);
}

async fn a_restart_during_a_due_tick_fires_it_once(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    // The first process records the fire, then dies inside the job.
    let dying = Arc::new(CountingJob {
        fail_first: 1,
        ..CountingJob::default()
    });
    h.clock.set(utc("2027-01-10T08:00:01Z"));
    let report = h.scheduler(dying.clone()).tick().await.unwrap();
    assert_eq!(report.fired.len(), 1);
    assert_eq!(report.completed, 0);

    // A new process on the same database, same moment and a bit later.
    let store = Store::open(&h.db.url, 4).await.unwrap();
    let job = Arc::new(CountingJob::default());
    let restarted = h.scheduler_on(store, job.clone());
    let first = restarted.tick().await.unwrap();
    h.clock.set(utc("2027-01-10T08:00:30Z"));
    let second = restarted.tick().await.unwrap();

    assert!(first.fired.is_empty() && second.fired.is_empty());
    assert_eq!(
        first.completed + second.completed,
        1,
        "the pending fire completes once"
    );
    assert_eq!(job.runs.load(Ordering::SeqCst), 1);
    assert_eq!(h.fired().await.len(), 1);
}

async fn a_clock_jump_back_never_fires_a_tick_again(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob::default());
    let scheduler = h.scheduler(job.clone());
    h.clock.set(utc("2027-01-10T08:00:01Z"));
    scheduler.tick().await.unwrap();

    // The stored plan is rewound as if the clock (or a stale process) saw
    // 08:00 as still to come: only the unique key stands in the way.
    sqlx::query("UPDATE schedules SET next_fire_at = $1")
        .bind(utc("2027-01-10T08:00:00Z").timestamp_millis())
        .execute(h.store.pool())
        .await
        .unwrap();
    h.clock.set(utc("2027-01-10T08:00:02Z"));
    let report = scheduler.tick().await.unwrap();

    assert!(report.fired.is_empty());
    assert_eq!(h.fired().await.len(), 1);
    assert_eq!(job.runs.load(Ordering::SeqCst), 1);
}

async fn downtime_across_two_ticks_with_catch_up_once_fires_one_late_run_and_reports_the_miss(
    db: Db,
) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob::default());
    // Down from before 08:00 on the 10th until 09:00 on the 11th.
    h.clock.set(utc("2027-01-11T09:00:00Z"));
    let report = h.scheduler(job.clone()).tick().await.unwrap();

    assert_eq!(h.fired().await, [utc("2027-01-11T08:00:00Z")]);
    assert_eq!(job.runs.load(Ordering::SeqCst), 1);
    assert_eq!(report.missed.len(), 1);
    let miss = &report.missed[0];
    assert_eq!((miss.ticks, miss.action.as_str()), (2, "caught_up"));

    let digest = soloist::digest::build(&h.store, &h.settings, utc("2027-01-12T08:00:00Z"))
        .await
        .unwrap();
    assert_eq!(digest.numbers.misses.len(), 1);
    assert!(digest.text.contains("job: 2 tick(s)"), "{}", digest.text);
    assert!(
        digest.text.contains("caught up with one late run"),
        "{}",
        digest.text
    );
}

async fn downtime_across_two_ticks_with_catch_up_skip_fires_nothing_and_reports_the_miss(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Skip,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob::default());
    let scheduler = h.scheduler(job.clone());
    h.clock.set(utc("2027-01-11T09:00:00Z"));
    let report = scheduler.tick().await.unwrap();

    assert!(h.fired().await.is_empty());
    assert_eq!(report.missed.len(), 1);
    assert_eq!(
        (report.missed[0].ticks, report.missed[0].action.as_str()),
        (2, "skipped")
    );

    // The next tick fires on time as usual.
    h.clock.set(utc("2027-01-12T08:00:03Z"));
    scheduler.tick().await.unwrap();
    assert_eq!(h.fired().await, [utc("2027-01-12T08:00:00Z")]);

    let digest = soloist::digest::build(&h.store, &h.settings, utc("2027-01-12T08:00:00Z"))
        .await
        .unwrap();
    assert!(digest.text.contains("job: 2 tick(s)"), "{}", digest.text);
    assert!(digest.text.contains("skipped"), "{}", digest.text);
}

/// Moves the clock in 10-minute steps from `from` to `to`, ticking each.
async fn walk(h: &Harness, scheduler: &Scheduler, from: &str, to: &str) {
    let mut now = utc(from);
    while now <= utc(to) {
        h.clock.set(now);
        scheduler.tick().await.unwrap();
        now += Duration::minutes(10);
    }
}

async fn the_spring_forward_day_fires_once(db: Db) {
    // 01:30 does not exist in Lisbon on 2027-03-28 (01:00 WET → 02:00 WEST).
    let h = Harness::new(
        db,
        "0 30 1 * * *",
        "Europe/Lisbon",
        CatchUp::Once,
        "2027-03-27T12:00:00Z",
    )
    .await;
    let scheduler = h.scheduler(Arc::new(CountingJob::default()));
    walk(
        &h,
        &scheduler,
        "2027-03-27T12:10:00Z",
        "2027-03-29T12:00:00Z",
    )
    .await;

    assert_eq!(
        h.fired().await,
        [utc("2027-03-28T01:30:00Z"), utc("2027-03-29T00:30:00Z")],
        "02:30 WEST on the 28th, 01:30 WEST on the 29th"
    );
}

async fn the_fall_back_day_fires_once(db: Db) {
    // 01:30 happens twice in Lisbon on 2027-10-31 (02:00 WEST → 01:00 WET).
    let h = Harness::new(
        db,
        "0 30 1 * * *",
        "Europe/Lisbon",
        CatchUp::Once,
        "2027-10-30T12:00:00Z",
    )
    .await;
    let scheduler = h.scheduler(Arc::new(CountingJob::default()));
    walk(
        &h,
        &scheduler,
        "2027-10-30T12:10:00Z",
        "2027-11-01T12:00:00Z",
    )
    .await;

    assert_eq!(
        h.fired().await,
        [utc("2027-10-31T00:30:00Z"), utc("2027-11-01T01:30:00Z")],
        "once on the 31st (the first 01:30), once on the 1st"
    );
}

async fn a_paused_schedule_does_not_fire_and_resuming_does_not_catch_up(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let scheduler = h.scheduler(Arc::new(CountingJob::default()));
    let now = utc("2027-01-10T07:30:00Z").timestamp_millis();
    assert!(h.store.set_schedule_paused("job", true, now).await.unwrap());

    h.clock.set(utc("2027-01-11T09:00:00Z"));
    scheduler.tick().await.unwrap();
    assert!(h.fired().await.is_empty());

    let now = utc("2027-01-11T09:00:00Z").timestamp_millis();
    assert!(
        h.store
            .set_schedule_paused("job", false, now)
            .await
            .unwrap()
    );
    let report = scheduler.tick().await.unwrap();
    assert!(report.fired.is_empty() && report.missed.is_empty());
    h.clock.set(utc("2027-01-12T08:00:01Z"));
    scheduler.tick().await.unwrap();
    assert_eq!(h.fired().await, [utc("2027-01-12T08:00:00Z")]);
}

/// The buttons `/schedules` offers go through the controller's press
/// transaction: the schedule changes once, a second press of the same
/// button changes nothing.
async fn the_pause_button_pauses_once_and_the_resume_button_resumes(db: Db) {
    let t = TestApp::spawn(db).await;
    Scheduler::new(
        t.app.store.clone(),
        t.app.settings.clone(),
        None,
        Arc::new(ManualClock::at(utc("2027-01-10T07:00:00Z"))),
    )
    .sync_config()
    .await
    .unwrap();
    let paused = |t: &TestApp| {
        let store = t.app.store.clone();
        async move {
            store
                .schedule_named("digest")
                .await
                .unwrap()
                .unwrap()
                .paused
        }
    };

    let listed = t.say("/schedules").await;
    assert!(texts(&listed).contains("digest"), "{}", texts(&listed));
    let pause = button(&listed, "Pause digest");
    let reply = t.press(&pause).await;
    assert!(
        texts(&reply).contains("digest is paused"),
        "{}",
        texts(&reply)
    );
    assert!(paused(&t).await);

    let again = t.press(&pause).await;
    assert!(texts(&again).contains("already used"), "{}", texts(&again));
    assert!(paused(&t).await);

    let listed = t.say("/schedules").await;
    let resume = button(&listed, "Resume digest");
    let reply = t.press(&resume).await;
    assert!(texts(&reply).contains("running again"), "{}", texts(&reply));
    assert!(!paused(&t).await);
}

/// Two processes on one PostgreSQL at the same due tick (SQLite is for one
/// process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_postgres_fire_a_due_tick_once() {
    let h = Harness::new(
        Db::Postgres,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob::default());
    let other = Store::open(&h.db.url, 4).await.unwrap();
    let a = h.scheduler(job.clone());
    let b = h.scheduler_on(other, job.clone());

    h.clock.set(utc("2027-01-10T08:00:01Z"));
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        ra.unwrap();
        rb.unwrap();
    }

    assert_eq!(h.fired().await.len(), 1);
    assert_eq!(job.runs.load(Ordering::SeqCst), 1);
}

/// The digest goes to the console, the business is on UTC.
fn digest_to_console(settings: &mut Settings) {
    settings.business.timezone = "UTC".into();
    settings.digest.chats = vec!["console:console".into()];
}

/// A scheduler for `app`'s engine with only the digest schedule (08:00),
/// on `clock`.
fn digest_scheduler(app: &soloist::app::App, clock: &ManualClock) -> Scheduler {
    let mut settings: Settings = (*app.settings).clone();
    settings.schedules.retain(|name, _| name == "digest");
    Scheduler::new(
        app.store.clone(),
        Arc::new(settings),
        Some(app.engine.clone()),
        Arc::new(clock.clone()),
    )
}

async fn digest_runs(store: &Store) -> Vec<(String, String)> {
    sqlx::query_as("SELECT status, input FROM runs WHERE flow = 'digest'")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// The scheduled digest is a run of the digest flow keyed on its fire: it
/// lands once in the configured chat, with its chart, whatever ticks
/// again (from a second scheduler too), and reports the day before its
/// tick, not the day the clock of the machine says.
async fn the_scheduled_digest_is_one_run_of_the_digest_flow_queued_once_with_its_chart(db: Db) {
    let t = TestApp::spawn_with(db, digest_to_console).await;
    let clock = ManualClock::at(utc("2027-01-10T07:00:00Z"));
    let scheduler = digest_scheduler(&t.app, &clock);
    scheduler.sync_config().await.unwrap();
    scheduler.tick().await.unwrap();

    clock.set(utc("2027-01-10T08:00:02Z"));
    let report = scheduler.tick().await.unwrap();
    scheduler.tick().await.unwrap();
    digest_scheduler(&t.app, &clock).tick().await.unwrap();

    assert_eq!(report.fired.len(), 1, "{report:?}");
    let sent = drain(&t.app.store).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(
        sent[0].text.starts_with("Daily digest for "),
        "{}",
        sent[0].text
    );
    assert!(sent[0].text.contains("2027-01-09"), "{}", sent[0].text);
    let image = sent[0].image.as_ref().expect("the chart");
    assert_eq!(image.file_name, "digest-2027-01-09.png");
    let runs = digest_runs(&t.app.store).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0, "completed");
    assert!(runs[0].1.contains("2027-01-10T08:00:00Z"), "{runs:?}");
}

/// Down across two digest ticks (catch-up once): the tick on time fires one
/// digest run, and that digest reports the two missed ticks.
async fn downtime_across_two_digest_ticks_sends_one_digest_that_reports_the_miss(db: Db) {
    let t = TestApp::spawn_with(db, digest_to_console).await;
    let clock = ManualClock::at(utc("2027-01-10T07:00:00Z"));
    let scheduler = digest_scheduler(&t.app, &clock);
    scheduler.sync_config().await.unwrap();
    scheduler.tick().await.unwrap();

    clock.set(utc("2027-01-12T08:00:02Z"));
    let report = scheduler.tick().await.unwrap();

    assert_eq!(report.missed.len(), 1, "{report:?}");
    let sent = drain(&t.app.store).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let text = &sent[0].text;
    assert!(text.contains("2027-01-11"), "{text}");
    assert!(
        text.contains("digest: 2 tick(s) from 2027-01-10 08:00 to 2027-01-11 08:00"),
        "{text}"
    );
    assert_eq!(digest_runs(&t.app.store).await.len(), 1);
}

/// `enabled = false` in the config retires the schedule at the next start:
/// it is not listed and does not fire.
async fn a_schedule_the_config_turns_off_is_retired_at_start(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    assert!(h.store.schedule_named("job").await.unwrap().is_some());
    let mut settings = (*h.settings).clone();
    settings.schedules.get_mut("job").unwrap().enabled = false;
    let job = Arc::new(CountingJob::default());
    let scheduler = Scheduler::new(
        h.store.clone(),
        Arc::new(settings),
        None,
        Arc::new(h.clock.clone()),
    )
    .with_job("counting", job.clone());

    scheduler.sync_config().await.unwrap();
    h.clock.set(utc("2027-01-10T08:00:05Z"));
    scheduler.tick().await.unwrap();

    assert!(h.store.schedule_named("job").await.unwrap().is_none());
    assert!(h.store.schedules().await.unwrap().is_empty());
    assert!(h.fired().await.is_empty());
    assert_eq!(job.runs.load(Ordering::SeqCst), 0);
}

/// An operator's copy of digest.toml (and of its template) changes what the
/// scheduled digest says; the numbers still come from SQL.
async fn an_operator_copy_of_the_digest_flow_changes_the_digest(db: Db) {
    let t = TestApp::spawn(db).await;
    let prompts = t.home.path().join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(
        prompts.join("short_digest.md"),
        "Short digest for {{ date }}: {{ completed }} run(s) done, {{ approvals_open }} approval(s) open.",
    )
    .unwrap();
    let flow = include_str!("../../config/flows/digest.toml")
        .replace("template = \"digest\"", "template = \"short_digest\"");
    let t = t.with_flow("digest", &flow).await;
    let app = t.restart(digest_to_console).await;
    let clock = ManualClock::at(utc("2027-01-10T07:00:00Z"));
    let scheduler = digest_scheduler(&app, &clock);
    scheduler.sync_config().await.unwrap();
    scheduler.tick().await.unwrap();

    clock.set(utc("2027-01-10T08:00:02Z"));
    scheduler.tick().await.unwrap();

    let sent = drain(&t.app.store).await;
    let texts: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["Short digest for 2027-01-09: 0 run(s) done, 0 approval(s) open."]
    );
    assert!(sent[0].image.is_some(), "the chart still goes with it");
}

fn weekly_flow(schedule: &str) -> String {
    format!(
        "name = \"weekly\"\ndescription = \"A note for the week ahead.\"\ncost_label = \"low-cost\"\n{schedule}\n\n[[steps]]\nname = \"brief\"\nkind = \"context\"\n"
    )
}

/// A scheduler for `t`'s flows alone (no configured schedules).
fn flows_scheduler(
    t: &TestApp,
    engine: &soloist::engine::Engine,
    clock: &ManualClock,
) -> Scheduler {
    let mut settings: Settings = (*t.app.settings).clone();
    settings.schedules.clear();
    Scheduler::new(
        t.app.store.clone(),
        Arc::new(settings),
        Some(engine.clone()),
        Arc::new(clock.clone()),
    )
}

/// A flow file that drops `schedule`, or goes, takes its schedule with it
/// at the next start: no row in /schedules, no fire; declaring it again
/// brings it back.
async fn a_flow_that_drops_its_schedule_loses_its_schedule_row_at_start(db: Db) {
    let scheduled = weekly_flow(r#"schedule = "0 0 9 * * Mon""#);
    let t = TestApp::spawn(db)
        .await
        .with_flow("weekly", &scheduled)
        .await;
    let clock = ManualClock::at(utc("2027-01-10T12:00:00Z"));
    flows_scheduler(&t, &t.app.engine, &clock)
        .sync_config()
        .await
        .unwrap();
    assert!(texts(&t.say("/schedules").await).contains("weekly"));

    let t = t.with_flow("weekly", &weekly_flow("")).await;
    let scheduler = flows_scheduler(&t, &t.app.engine, &clock);
    scheduler.sync_config().await.unwrap();

    assert!(
        t.app
            .store
            .schedule_named("weekly")
            .await
            .unwrap()
            .is_none()
    );
    let listed = texts(&t.say("/schedules").await);
    assert!(!listed.contains("weekly"), "{listed}");
    scheduler.tick().await.unwrap();
    clock.set(utc("2027-01-11T09:00:02Z"));
    assert!(scheduler.tick().await.unwrap().fired.is_empty());
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE flow = 'weekly'")
        .fetch_one(t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(runs, 0);

    // Declared again: back, planned from now (no miss for the gap).
    let t = t.with_flow("weekly", &scheduled).await;
    flows_scheduler(&t, &t.app.engine, &clock)
        .sync_config()
        .await
        .unwrap();
    assert!(texts(&t.say("/schedules").await).contains("weekly"));

    // The file gone: retired again.
    std::fs::remove_file(t.home.path().join("config/flows/weekly.toml")).unwrap();
    let restarted = t.restart(|_| {}).await;
    flows_scheduler(&t, &restarted.engine, &clock)
        .sync_config()
        .await
        .unwrap();
    assert!(
        t.app
            .store
            .schedule_named("weekly")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        t.app
            .store
            .schedule_misses(0, i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_due_housekeeping_tick_runs_its_job_once_and_its_misses_stay_out_of_the_digest(db: Db) {
    let h = Harness::new(
        db,
        "0 */10 * * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob {
        housekeeping: true,
        ..CountingJob::default()
    });
    let scheduler = h.scheduler(job.clone());

    h.clock.set(utc("2027-01-10T07:10:01Z"));
    scheduler.tick().await.unwrap();
    scheduler.tick().await.unwrap();
    let after_one_tick = job.runs.load(Ordering::SeqCst);
    // Down from 07:10 to 09:00: ten ticks missed, the 09:00 one on time.
    h.clock.set(utc("2027-01-10T09:00:30Z"));
    let report = scheduler.tick().await.unwrap();
    let digest = soloist::digest::build(&h.store, &h.settings, utc("2027-01-10T09:01:00Z"))
        .await
        .unwrap();

    assert_eq!(after_one_tick, 1, "a due tick runs its job once");
    assert_eq!(job.runs.load(Ordering::SeqCst), 2, "once after downtime");
    assert_eq!(
        h.fired().await,
        [utc("2027-01-10T07:10:00Z"), utc("2027-01-10T09:00:00Z")]
    );
    assert!(report.missed.is_empty(), "{:?}", report.missed);
    assert!(digest.numbers.misses.is_empty());
    assert!(!digest.text.contains("job:"), "{}", digest.text);
}

async fn fire_rows_past_the_retention_are_pruned_by_the_history_job(db: Db) {
    let h = Harness::new(
        db,
        "0 0 8 * * *",
        "UTC",
        CatchUp::Once,
        "2027-01-10T07:00:00Z",
    )
    .await;
    let job = Arc::new(CountingJob::default());
    let scheduler = h.scheduler(job.clone());
    for now in ["2027-01-10T08:00:01Z", "2027-01-11T08:00:01Z"] {
        h.clock.set(utc(now));
        scheduler.tick().await.unwrap();
    }
    // The built-in job, as config/default.toml registers it, keeping a day.
    let mut settings = (*h.settings).clone();
    settings.scheduler.keep_history_days = 1;
    settings.schedules.insert(
        "prune_schedule_history".into(),
        ScheduleConfig {
            cron: "0 15 4 * * *".into(),
            timezone: "UTC".into(),
            catch_up: CatchUp::Once,
            target: String::new(),
            input: String::new(),
            enabled: true,
        },
    );
    let pruning = Scheduler::new(
        h.store.clone(),
        Arc::new(settings),
        None,
        Arc::new(h.clock.clone()),
    )
    .with_job("counting", job.clone());
    pruning.sync_config().await.unwrap();
    h.clock.set(utc("2027-01-11T09:00:00Z"));
    pruning.tick().await.unwrap();
    let before = h.fired().await;

    h.clock.set(utc("2027-01-12T04:15:01Z"));
    pruning.tick().await.unwrap();
    pruning.tick().await.unwrap();

    assert_eq!(before.len(), 2);
    assert_eq!(
        h.fired().await,
        [utc("2027-01-11T08:00:00Z")],
        "the fire older than a day is gone, the newer one stays"
    );
    assert_eq!(job.runs.load(Ordering::SeqCst), 2, "nothing fired again");
}

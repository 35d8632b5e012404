//! The content funnel (the `post` flow): a fact check on the approval,
//! Revise, publishing now or at a time (once, whatever ticks or restarts),
//! retraction on Telegram and Discord, cancellation of a post not out yet,
//! a failed retraction said out loud, `/result` numbers in the digest.
//! Real HTTP to the fake model, Telegram and Discord servers.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use soloist::config::{Secret, Settings};
use soloist::domain::{JournalEvent, Outbound, RunId, RunStatus};
use soloist::memory::chunk::Format;
use soloist::memory::{Document, Memory, SourceKind};
use soloist::scheduler::{ManualClock, Scheduler};

use crate::fake_discord::{FakeDiscord, TOKEN};
use crate::fake_llm::Behavior;
use crate::fake_telegram::{Failure, FakeTelegram};
use crate::helpers::{Db, TestApp, button, texts};
use crate::on_both_backends;

on_both_backends!(
    a_fact_check_lists_a_contradicted_claim_with_its_source,
    revise_rewrites_with_the_instruction_and_back_restores_the_previous_version,
    a_post_for_tomorrow_is_published_once_across_two_ticks_and_a_restart,
    retract_deletes_the_published_post_on_telegram,
    retract_deletes_the_published_post_on_discord,
    retracting_a_post_not_yet_out_cancels_it,
    a_telegram_post_too_old_to_delete_is_replaced_by_a_retraction_note,
    a_failed_retraction_is_reported_and_journaled,
    a_refused_discord_delete_is_reported_and_the_post_stays_published,
    a_typed_time_is_read_in_the_operators_zone_and_a_bad_one_is_asked_again,
    results_are_stored_and_the_digest_compares_them_with_earlier_posts,
    publish_now_posts_at_once_and_no_tick_or_restart_posts_it_again,
    a_paused_publish_posts_schedule_holds_a_due_post_until_resumed,
);

const CHANNEL: i64 = -1_001_234_567;
const DISCORD_CHANNEL: &str = "900000000000000777";

fn telegram_target(settings: &mut Settings, telegram: &FakeTelegram) {
    settings.telegram.token = Secret::new(telegram.token.clone());
    settings.telegram.api_url = telegram.api_url.clone();
    settings.publish.targets = vec![format!("telegram:{CHANNEL}")];
}

fn discord_target(settings: &mut Settings, discord: &FakeDiscord) {
    settings.discord.token = Secret::new(TOKEN);
    settings.discord.api_url = discord.api_url.clone();
    settings.publish.targets = vec![format!("discord:{DISCORD_CHANNEL}")];
}

/// A scheduler on `clock` with the config's schedules written, as at
/// start: scheduled posts go out by the `publish_posts` schedule.
async fn scheduler(app: &soloist::app::App, clock: &ManualClock) -> Scheduler {
    let scheduler = Scheduler::new(
        app.store.clone(),
        app.settings.clone(),
        Some(app.engine.clone()),
        Arc::new(clock.clone()),
    );
    scheduler.sync_config().await.unwrap();
    scheduler
}

/// What `publish_posts` publishes at `at`: one tick to plan it, then one
/// when its next minute is due.
async fn published_by_the_schedule_at(app: &soloist::app::App, at: chrono::DateTime<Utc>) -> usize {
    let clock = ManualClock::at(at);
    let scheduler = scheduler(app, &clock).await;
    let planned = scheduler.tick().await.unwrap().published;
    clock.set(at + Duration::seconds(61));
    planned + scheduler.tick().await.unwrap().published
}

async fn latest_run(app: &TestApp) -> RunId {
    app.app.store.recent_runs(1).await.unwrap().remove(0).id
}

/// `/post`, Approve, then the time button labelled `when`; returns the run
/// and what the press answered.
async fn approve_and_choose(app: &TestApp, when: &str) -> (RunId, Vec<Outbound>) {
    let offer = app
        .say("/post a LinkedIn post about the Trilho Hostels audit")
        .await;
    let asked = app.press(&button(&offer, "Approve")).await;
    assert!(
        texts(&asked).contains("When should run"),
        "{}",
        texts(&asked)
    );
    let chosen = app.press(&button(&asked, when)).await;
    (latest_run(app).await, chosen)
}

/// Publishes now: the button alone, no scheduler tick. The press is
/// answered with the post already out ("Published run …", Retract).
async fn publish_now(app: &TestApp) -> RunId {
    publish_now_told(app).await.0
}

/// [`publish_now`], and what the press answered.
async fn publish_now_told(app: &TestApp) -> (RunId, Vec<Outbound>) {
    let (run, told) = approve_and_choose(app, "Publish now").await;
    let publications = app.app.store.publications_for_run(run).await.unwrap();
    assert_eq!(publications[0].status, "published");
    assert!(texts(&told).contains("Published run"), "{}", texts(&told));
    (run, told)
}

async fn compensations(app: &TestApp, run: RunId) -> Vec<(bool, String)> {
    app.app
        .store
        .journal(run)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            JournalEvent::Compensated { ok, detail, .. } => Some((ok, detail)),
            _ => None,
        })
        .collect()
}

async fn a_fact_check_lists_a_contradicted_claim_with_its_source(db: Db) {
    let app = TestApp::spawn(db).await;
    let memory = Memory::new(app.app.store.clone(), app.app.settings.memory.clone());
    memory
        .ingest(&Document {
            name: "about.md".into(),
            kind: SourceKind::File,
            format: Format::Markdown,
            text: "# About the studio\n\nThe studio was founded in 2019 in Lisbon and audits hostel websites.".into(),
            url: String::new(),
            origin: "test file about.md".into(),
        })
        .await
        .unwrap();
    app.llm
        .then(Behavior::reply("Since 2015 our studio has audited hostel websites, Trilho Hostels included."))
        .then(Behavior::reply(
            &json!({"claims": [
                {"claim": "founded in 2015", "verdict": "contradicted", "source": "about.md", "evidence": "founded in 2019"},
                {"claim": "audits hostel websites", "verdict": "supported", "source": "about.md", "evidence": "audits hostel websites"}
            ]})
            .to_string(),
        ));

    let offer = app
        .say("/post a LinkedIn post about the Trilho Hostels audit")
        .await;

    let shown = texts(&offer);
    assert!(shown.contains("Fact check:"), "{shown}");
    assert!(
        shown.contains("draft says founded in 2015; about.md says founded in 2019"),
        "{shown}"
    );
    assert!(
        !shown.contains("audits hostel websites; about.md"),
        "{shown}"
    );
    let labels: Vec<_> = offer
        .last()
        .unwrap()
        .buttons
        .iter()
        .map(|b| b.label.as_str())
        .collect();
    assert_eq!(labels, ["Approve", "Revise", "Edit", "Reject"]);
    // The check is structured output, with the draft quoted as model output
    // and the knowledge quoted with its source.
    assert_eq!(app.llm.calls(), 2);
    let format = app.llm.response_format(1).expect("structured output");
    assert_eq!(format["type"], "json_schema", "{format}");
    let prompt = app.llm.requests()[1].to_string();
    assert!(prompt.contains("data from model_output"), "{prompt}");
    assert!(prompt.contains("founded in 2019"), "{prompt}");
    let run = latest_run(&app).await;
    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.outputs["check"]["uncertain"], true);
}

async fn revise_rewrites_with_the_instruction_and_back_restores_the_previous_version(db: Db) {
    let app = TestApp::spawn(db).await;
    let first = "First version, with emoji 🎉 and far too long.";
    let second = "Shorter: a 30% deposit holds your audit slot.";
    app.llm.then(Behavior::reply(first));
    let offer = app.say("/post a post about the deposit").await;
    assert!(texts(&offer).contains(first));

    let ask = app.press(&button(&offer, "Revise")).await;
    assert!(
        texts(&ask).contains("What should change?"),
        "{}",
        texts(&ask)
    );
    // The rewrite (quality tier), then its fact check (fast tier).
    app.llm.then(Behavior::reply(second));
    let revised = app.say("shorter, mention the deposit, no emoji").await;

    assert!(texts(&revised).contains(second), "{}", texts(&revised));
    let rewrite = app.llm.requests()[2].to_string();
    assert!(
        rewrite.contains("shorter, mention the deposit, no emoji"),
        "{rewrite}"
    );
    assert!(
        rewrite.contains("far too long"),
        "the rewrite sees the version it replaces"
    );
    assert_eq!(
        app.llm.requests()[2]["model"],
        "gpt-4o",
        "the quality tier rewrites"
    );
    let run = latest_run(&app).await;
    let memory = Memory::new(app.app.store.clone(), app.app.settings.memory.clone());
    let kept = memory
        .kept(&run.to_string(), "funnel.previous.review")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some(first));

    let back = app.press(&button(&revised, "Back")).await;
    assert!(texts(&back).contains(first), "{}", texts(&back));
    let calls = app.llm.calls();
    let approved = app.press(&button(&back, "Approve")).await;
    assert_eq!(app.llm.calls(), calls, "Back calls no model");
    assert!(
        texts(&approved).contains("When should run"),
        "{}",
        texts(&approved)
    );
    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.outputs["review"]["text"], first);
}

async fn a_post_for_tomorrow_is_published_once_across_two_ticks_and_a_restart(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let (run, chosen) = approve_and_choose(&app, "Tomorrow 09:00").await;
    assert!(texts(&chosen).contains("goes out"), "{}", texts(&chosen));
    let publications = app.app.store.publications_for_run(run).await.unwrap();
    assert_eq!(publications.len(), 1);
    let due = publications[0].due_at;

    let clock = ManualClock::at(Utc::now());
    let first = scheduler(&app.app, &clock).await;
    clock.set(chrono::DateTime::from_timestamp_millis(due - 60_000).unwrap());
    assert_eq!(first.tick().await.unwrap().published, 0);
    assert!(telegram.inspect(|s| s.sent_to(CHANNEL)).is_empty());

    clock.set(chrono::DateTime::from_timestamp_millis(due + 1_000).unwrap());
    let second = scheduler(&app.app, &clock).await;
    let (a, b) = tokio::join!(first.tick(), second.tick());
    assert_eq!(a.unwrap().published + b.unwrap().published, 1);
    assert_eq!(first.tick().await.unwrap().published, 0);
    let restarted = app.restart(|s| telegram_target(s, &telegram)).await;
    assert_eq!(
        scheduler(&restarted, &clock)
            .await
            .tick()
            .await
            .unwrap()
            .published,
        0
    );

    let sent = telegram.inspect(|s| s.sent_to(CHANNEL));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].text.as_deref(),
        Some(crate::fake_llm::DEFAULT_DRAFT)
    );
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'post.published'")
            .fetch_one(app.app.store.pool())
            .await
            .unwrap();
    assert_eq!(events, 1, "post.published is emitted once");
    let told = app.drain().await;
    assert!(texts(&told).contains("Published run"), "{}", texts(&told));
    button(&told, "Retract");
    let run_row = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run_row.status, RunStatus::Completed);
}

async fn retract_deletes_the_published_post_on_telegram(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let (run, told) = publish_now_told(&app).await;
    assert_eq!(telegram.inspect(|s| s.sent_to(CHANNEL).len()), 1);

    let reply = app.press(&button(&told, "Retract")).await;

    assert!(texts(&reply).contains("is deleted"), "{}", texts(&reply));
    assert!(telegram.inspect(|s| s.sent_to(CHANNEL)).is_empty());
    assert_eq!(telegram.inspect(|s| s.deleted.len()), 1);
    assert_eq!(compensations(&app, run).await.len(), 1);
    assert!(compensations(&app, run).await[0].0);
    let publication = &app.app.store.publications_for_run(run).await.unwrap()[0];
    assert_eq!(publication.status, "retracted");
}

async fn retract_deletes_the_published_post_on_discord(db: Db) {
    let discord = FakeDiscord::start().await;
    let app = TestApp::spawn_with(db, |s| discord_target(s, &discord)).await;
    let run = publish_now(&app).await;
    assert_eq!(discord.see(|w| w.in_channel(DISCORD_CHANNEL).len()), 1);

    let reply = app.say(&format!("/retract {}", run.short())).await;

    assert!(texts(&reply).contains("is deleted"), "{}", texts(&reply));
    assert!(discord.see(|w| w.in_channel(DISCORD_CHANNEL)).is_empty());
    assert_eq!(discord.see(|w| w.deleted.len()), 1);
    assert!(compensations(&app, run).await[0].0);
}

async fn retracting_a_post_not_yet_out_cancels_it(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let (run, _) = approve_and_choose(&app, "Monday 09:00").await;

    let reply = app.say(&format!("/retract {}", run.short())).await;

    assert!(texts(&reply).contains("cancelled"), "{}", texts(&reply));
    assert_eq!(
        published_by_the_schedule_at(&app.app, Utc::now() + Duration::days(8)).await,
        0
    );
    assert!(telegram.inspect(|s| s.sent_to(CHANNEL)).is_empty());
    assert_eq!(
        app.app.store.publications_for_run(run).await.unwrap()[0].status,
        "cancelled"
    );
    assert!(compensations(&app, run).await[0].0);
}

async fn a_telegram_post_too_old_to_delete_is_replaced_by_a_retraction_note(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let run = publish_now(&app).await;
    telegram.fail_next(
        "deletemessage",
        Failure::Refused(400, "Bad Request: message can't be deleted for everyone"),
    );

    let reply = app.say(&format!("/retract {}", run.short())).await;

    assert!(texts(&reply).contains("48 hours"), "{}", texts(&reply));
    let sent = telegram.inspect(|s| s.sent_to(CHANNEL));
    assert_eq!(sent[0].text.as_deref(), Some("This post was retracted."));
    assert_eq!(
        app.app.store.publications_for_run(run).await.unwrap()[0].status,
        "retracted"
    );
}

async fn a_failed_retraction_is_reported_and_journaled(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let run = publish_now(&app).await;
    telegram.fail_next(
        "deletemessage",
        Failure::Refused(403, "Forbidden: bot is not a member of the channel chat"),
    );
    telegram.fail_next(
        "editmessagetext",
        Failure::Refused(403, "Forbidden: bot is not a member of the channel chat"),
    );

    let reply = app.say(&format!("/retract {}", run.short())).await;

    let shown = texts(&reply);
    assert!(shown.contains("could NOT retract"), "{shown}");
    assert!(shown.contains("not a member"), "{shown}");
    assert_eq!(telegram.inspect(|s| s.sent_to(CHANNEL).len()), 1);
    let journaled = compensations(&app, run).await;
    assert_eq!(journaled.len(), 1);
    assert!(!journaled[0].0, "{journaled:?}");
    assert_eq!(
        app.app.store.publications_for_run(run).await.unwrap()[0].status,
        "published"
    );
}

async fn results_are_stored_and_the_digest_compares_them_with_earlier_posts(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let first = publish_now(&app).await;
    app.drain().await;
    let second = publish_now(&app).await;
    app.drain().await;

    let bad = app
        .say(&format!("/result {} views=lots", first.short()))
        .await;
    assert!(
        texts(&bad).contains("'lots' is not a number"),
        "{}",
        texts(&bad)
    );
    app.say(&format!("/result {} views=800 clicks=20", first.short()))
        .await;
    let stored = app
        .say(&format!("/result {} views=1200 clicks=40", second.short()))
        .await;
    assert!(texts(&stored).contains("1200 views"), "{}", texts(&stored));

    let digest =
        soloist::digest::build_now(&app.app.store, &app.app.settings, app.app.engine.prompts())
            .await
            .unwrap();
    assert!(
        digest.text.contains(&format!("run {}", second.short())),
        "{}",
        digest.text
    );
    assert!(
        digest
            .text
            .contains("1200 views vs 800 on average over 1 earlier post(s), +50%"),
        "{}",
        digest.text
    );
    assert!(digest.text.contains("40 clicks vs 20"), "{}", digest.text);
}

async fn a_refused_discord_delete_is_reported_and_the_post_stays_published(db: Db) {
    let discord = FakeDiscord::start().await;
    let app = TestApp::spawn_with(db, |s| discord_target(s, &discord)).await;
    let run = publish_now(&app).await;
    discord.refuse_next_delete(403, 50013, "Missing Permissions");

    let reply = app.say(&format!("/retract {}", run.short())).await;

    let shown = texts(&reply);
    assert!(shown.contains("could NOT retract"), "{shown}");
    assert!(shown.contains("Missing Permissions"), "{shown}");
    assert_eq!(discord.see(|w| w.in_channel(DISCORD_CHANNEL).len()), 1);
    assert!(!compensations(&app, run).await[0].0);
    assert_eq!(
        app.app.store.publications_for_run(run).await.unwrap()[0].status,
        "published"
    );
}

async fn a_typed_time_is_read_in_the_operators_zone_and_a_bad_one_is_asked_again(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let (run, asked) = approve_and_choose(&app, "Pick a time").await;
    assert!(
        texts(&asked).contains("Send the date and time"),
        "{}",
        texts(&asked)
    );

    let again = app.say("soonish").await;
    assert!(
        texts(&again).contains("could not read 'soonish'"),
        "{}",
        texts(&again)
    );
    assert!(
        app.app
            .store
            .publications_for_run(run)
            .await
            .unwrap()
            .is_empty()
    );

    // Lisbon is on UTC in winter: 10:00 there is 10:00 UTC.
    let scheduled = app.say("2099-01-15 10:00").await;
    assert!(
        texts(&scheduled).contains("goes out"),
        "{}",
        texts(&scheduled)
    );
    let publications = app.app.store.publications_for_run(run).await.unwrap();
    assert_eq!(publications.len(), 1);
    let expected = chrono::DateTime::parse_from_rfc3339("2099-01-15T10:00:00Z").unwrap();
    assert_eq!(publications[0].due_at, expected.timestamp_millis());
}

/// "Publish now" does not wait for the next tick: the post is out when the
/// press is answered, and neither the schedule nor a restart posts it again.
async fn publish_now_posts_at_once_and_no_tick_or_restart_posts_it_again(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;

    let (run, _) = approve_and_choose(&app, "Publish now").await;

    assert_eq!(telegram.inspect(|s| s.sent_to(CHANNEL)).len(), 1);
    let publications = app.app.store.publications_for_run(run).await.unwrap();
    assert_eq!(publications[0].status, "published");
    assert_eq!(published_by_the_schedule_at(&app.app, Utc::now()).await, 0);
    let restarted = app.restart(|s| telegram_target(s, &telegram)).await;
    let later = Utc::now() + Duration::minutes(5);
    assert_eq!(published_by_the_schedule_at(&restarted, later).await, 0);
    assert_eq!(telegram.inspect(|s| s.sent_to(CHANNEL)).len(), 1);
}

/// Scheduled post delivery is a named schedule: listed by /schedules, and
/// paused, a due post waits until it is resumed.
async fn a_paused_publish_posts_schedule_holds_a_due_post_until_resumed(db: Db) {
    let telegram = FakeTelegram::start().await;
    let app = TestApp::spawn_with(db, |s| telegram_target(s, &telegram)).await;
    let (run, _) = approve_and_choose(&app, "Tomorrow 09:00").await;
    let due = app.app.store.publications_for_run(run).await.unwrap()[0].due_at;
    let due = chrono::DateTime::from_timestamp_millis(due).unwrap();
    let clock = ManualClock::at(due - Duration::minutes(5));
    let scheduler = scheduler(&app.app, &clock).await;
    scheduler.tick().await.unwrap();

    let listed = app.say("/schedules").await;
    assert!(
        texts(&listed).contains("publish_posts"),
        "{}",
        texts(&listed)
    );
    app.press(&button(&listed, "Pause publish_posts")).await;
    clock.set(due + Duration::seconds(1));
    assert_eq!(scheduler.tick().await.unwrap().published, 0);
    clock.set(due + Duration::minutes(10));
    assert_eq!(scheduler.tick().await.unwrap().published, 0);
    assert!(telegram.inspect(|s| s.sent_to(CHANNEL)).is_empty());

    let listed = app.say("/schedules").await;
    app.press(&button(&listed, "Resume publish_posts")).await;
    scheduler.tick().await.unwrap();
    clock.set(due + Duration::minutes(11));
    assert_eq!(scheduler.tick().await.unwrap().published, 1);
    assert_eq!(telegram.inspect(|s| s.sent_to(CHANNEL)).len(), 1);
}

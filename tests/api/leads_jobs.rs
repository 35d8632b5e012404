//! The lead jobs around the flow: the follow-up reminder (a schedule, run
//! with a clock the test moves) and `soloist eval leads FILE.jsonl` (the
//! real binary against the fake model).

use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use soloist::leads::{LeadStatus, Leads, parse_body, store_lead};
use soloist::scheduler::{ManualClock, Scheduler};

use crate::fake_llm::{Behavior, FakeLlm};
use crate::helpers::{Db, TestApp};
use crate::leads::{own_fixture_leads, scripted_extraction};
use crate::on_both_backends;

on_both_backends!(a_replied_lead_quiet_for_the_configured_days_gets_one_reminder_not_two);

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Stores the own fixture `id` and marks it replied at `contact`.
async fn replied_at(app: &TestApp, id: &str, contact: DateTime<Utc>) -> i64 {
    let lead = own_fixture_leads()
        .into_iter()
        .find(|l| l["id"] == id)
        .unwrap();
    let new = parse_body(lead.to_string().as_bytes(), "application/json").unwrap();
    assert!(store_lead(&app.app.store, &new).await.unwrap());
    let row = Leads(&app.app.store).recent(1).await.unwrap().remove(0);
    assert!(
        Leads(&app.app.store)
            .set_status(row.id, LeadStatus::Replied)
            .await
            .unwrap()
    );
    // The reply's time on the test's clock, not the machine's.
    sqlx::query("UPDATE leads SET last_contact = $1 WHERE id = $2")
        .bind(contact.timestamp_millis())
        .bind(row.id)
        .execute(app.app.store.pool())
        .await
        .unwrap();
    row.id
}

/// The reminders the owner got so far (the console's outbox, drained).
async fn reminders(app: &TestApp) -> Vec<String> {
    app.drain()
        .await
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.starts_with("Follow up?"))
        .collect()
}

async fn a_replied_lead_quiet_for_the_configured_days_gets_one_reminder_not_two(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.schedules.retain(|name, _| name == "follow_up_leads");
        s.digest.chats = vec!["console:console".into()];
        s.leads.follow_up_days = 3;
    })
    .await;
    let start = utc("2027-03-01T09:30:00Z");
    let rui = replied_at(&app, "T01", start).await;
    let clara = replied_at(&app, "T03", start + Duration::days(2)).await;
    // A lead nobody replied to is never "quiet".
    let new = parse_body(
        own_fixture_leads()[3].to_string().as_bytes(),
        "application/json",
    )
    .unwrap();
    store_lead(&app.app.store, &new).await.unwrap();
    let clock = ManualClock::at(start);
    let scheduler = Scheduler::new(
        app.app.store.clone(),
        app.app.settings.clone(),
        Some(app.app.engine.clone()),
        Arc::new(clock.clone()),
    );
    scheduler.sync_config().await.unwrap();
    scheduler.tick().await.unwrap();

    let mut seen = Vec::new();
    // Hourly ticks from 2 days 23 hours to 5 days 2 hours after the
    // first reply: Rui goes quiet at 3 days, Clara at 5.
    for hours in [71, 73, 74, 75, 100, 121, 122, 123] {
        clock.set(start + Duration::hours(hours) + Duration::minutes(1));
        let report = scheduler.tick().await.unwrap();
        assert!(
            !report.fired.is_empty(),
            "hour {hours}: the hourly job fires"
        );
        seen.push((hours, reminders(&app).await));
    }

    let got: Vec<(i64, usize)> = seen.iter().map(|(h, r)| (*h, r.len())).collect();
    assert_eq!(
        got,
        [
            (71, 0),
            (73, 1),
            (74, 0),
            (75, 0),
            (100, 0),
            (121, 1),
            (122, 0),
            (123, 0)
        ],
        "{seen:#?}"
    );
    let (first, second) = (&seen[1].1[0], &seen[5].1[0]);
    assert!(
        first.contains(&format!("#{rui} Rui Santos")) && !first.contains("Clara"),
        "{first}"
    );
    assert!(
        second.contains(&format!("#{clara} Clara Dias")) && !second.contains("Rui"),
        "{second}"
    );
    assert!(first.contains("No word for 3 days"), "{first}");
    let quiet_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM leads WHERE reminded_at IS NOT NULL")
            .fetch_one(app.app.store.pool())
            .await
            .unwrap();
    assert_eq!(quiet_rows, 2, "the new lead was never reminded");
}

/// Runs `soloist eval leads FILE` in `home` against the fake model.
fn eval_leads(home: &std::path::Path, llm: &str, file: &str) -> (String, String, bool) {
    let output = Command::new(env!("CARGO_BIN_EXE_soloist"))
        .args(["eval", "leads", file])
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env("OPENAI_BASE_URL", llm)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run soloist eval leads");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_leads_prints_the_tier_accuracy_and_confusion_table_of_a_scripted_model() {
    let llm = FakeLlm::start().await;
    let leads: Vec<Value> = ["T01", "T02", "T03", "T04"]
        .iter()
        .map(|id| {
            own_fixture_leads()
                .into_iter()
                .find(|l| l["id"] == *id)
                .unwrap()
        })
        .collect();
    // The scripted model reads T03 (hot: an audit for a team of 15) as a
    // chat about booking for three people, so the rules say borderline.
    let mut misread = scripted_extraction(&leads[2]);
    misread["need"] = "a chat about booking".into();
    misread["team_size"] = 3.into();
    for answer in [
        scripted_extraction(&leads[0]),
        scripted_extraction(&leads[1]),
        misread,
        scripted_extraction(&leads[3]),
    ] {
        llm.then(Behavior::reply(&answer.to_string()));
    }
    let home = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = leads.iter().map(Value::to_string).collect();
    lines.push(r#"{"id":"X","message":"no tier given"}"#.into());
    std::fs::write(home.path().join("leads.jsonl"), lines.join("\n")).unwrap();
    let (path, url) = (home.path().to_path_buf(), llm.base_url.clone());

    let (stdout, stderr, ok) =
        tokio::task::spawn_blocking(move || eval_leads(&path, &url, "leads.jsonl"))
            .await
            .unwrap();

    assert!(ok, "{stderr}");
    let expected = [
        "tier accuracy: 75.0% (3/4)",
        "expected \\ predicted   hot  borderline  cold",
        "hot                      1           1     0",
        "borderline               0           1     0",
        "cold                     0           0     1",
        "skipped: line 5: no expected_tier",
    ];
    assert_eq!(
        stdout.trim_end().lines().collect::<Vec<_>>(),
        expected,
        "{stdout}\n{stderr}"
    );
    assert_eq!(llm.calls(), 4, "one extraction per lead with a tier");
}

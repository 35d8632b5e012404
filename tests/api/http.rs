//! `/metrics` and `/healthz` over real HTTP.

use std::collections::HashMap;

use soloist::http::{Health, Hooks, HttpState};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Db, TestApp};
use crate::on_both_backends;

on_both_backends!(
    metrics_parse_as_prometheus_text_and_model_calls_move_when_a_draft_runs,
    healthz_turns_503_with_the_reason_when_the_database_is_down,
    schedules_list_their_next_fire_and_pause_with_a_button,
);

/// Serves the app's HTTP routes on a free loopback port.
async fn serve(app: &TestApp, health: Health) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = HttpState {
        store: app.app.store.clone(),
        settings: app.app.settings.http.clone(),
        health,
        hooks: Hooks::default(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(soloist::http::serve(listener, state, shutdown.clone()));
    (base, shutdown)
}

/// Parses Prometheus text format strictly enough to catch a malformed line:
/// `# HELP`/`# TYPE` comments, then `name{label="value",…} number`.
/// Returns each series' value by its full name with labels.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let labels = &name[metric.len()..];
        if !labels.is_empty() {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels: {line}"
            );
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (key, _) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
            }
        }
        series.insert(name.to_string(), value);
    }
    series
}

fn total(series: &HashMap<String, f64>, metric: &str) -> f64 {
    series
        .iter()
        .filter(|(name, _)| name.split('{').next() == Some(metric))
        .map(|(_, v)| v)
        .sum()
}

async fn metrics_parse_as_prometheus_text_and_model_calls_move_when_a_draft_runs(db: Db) {
    let app = TestApp::spawn(db).await;
    let (base, _shutdown) = serve(&app, Health::default()).await;
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        parse_prometheus(&response.text().await.unwrap())
    };
    let before = scrape().await;

    app.say("/draft a post about the new audit price").await;
    let after = scrape().await;

    assert_eq!(total(&before, "soloist_model_calls_total"), 0.0);
    assert!(
        total(&after, "soloist_model_calls_total") >= 1.0,
        "{after:#?}"
    );
    assert!(total(&after, "soloist_model_tokens_total") > 0.0);
    assert!(after.contains_key("soloist_outbox_backlog"));
    assert!(total(&after, "soloist_updates_handled_total") >= 1.0);
}

async fn healthz_turns_503_with_the_reason_when_the_database_is_down(db: Db) {
    let app = TestApp::spawn(db).await;
    let health = Health::default();
    health.set("telegram", true);
    let (base, _shutdown) = serve(&app, health.clone()).await;
    let client = reqwest::Client::new();
    let healthy = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);

    health.set("telegram", false);
    let adapter_down = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(adapter_down.status(), 503);
    assert!(
        adapter_down
            .text()
            .await
            .unwrap()
            .contains("telegram is not connected")
    );

    health.set("telegram", true);
    app.app.store.close().await;
    let down = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(down.status(), 503);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["database"], "unreachable");
    assert!(
        body["reasons"][0].as_str().unwrap().contains("database"),
        "{body}"
    );
}

async fn schedules_list_their_next_fire_and_pause_with_a_button(db: Db) {
    let app = TestApp::spawn(db).await;
    let scheduler = soloist::scheduler::Scheduler::new(
        app.app.store.clone(),
        app.app.settings.clone(),
        None,
        std::sync::Arc::new(soloist::scheduler::DatabaseClock(app.app.store.clone())),
    );
    scheduler.sync_config().await.unwrap();

    let listed = app.say("/schedules").await;
    assert!(
        listed[0]
            .text
            .contains("digest (digest, cron \"0 0 8 * * *\""),
        "{}",
        listed[0].text
    );
    assert!(listed[0].text.contains("next 20"), "{}", listed[0].text);
    let pause = crate::helpers::button(&listed, "Pause digest");
    let reply = app.press(&pause).await;
    assert!(crate::helpers::texts(&reply).contains("digest is paused"));
    let listed = app.say("/schedules").await;
    assert!(listed[0].text.contains("paused"), "{}", listed[0].text);
    crate::helpers::button(&listed, "Resume digest");

    let changed = app.say("/schedule digest 07:30").await;
    assert!(
        crate::helpers::texts(&changed).contains("\"0 30 7 * * *\""),
        "{}",
        crate::helpers::texts(&changed)
    );
    let row = app
        .app
        .store
        .schedule_named("digest")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.cron, "0 30 7 * * *");
}

//! Leads: the web hook over real HTTP (secret, HMAC, idempotency, size
//! limit, forms), `/lead` and `/leads`, and the scoring rules over the
//! project's lead fixtures.

use serde_json::Value;
use soloist::config::Secret;
use soloist::http::{Health, HttpState};
use soloist::leads::hook::sign;
use soloist::leads::score::score;
use soloist::leads::{Criteria, Tier};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Db, TestApp, texts};
use crate::on_both_backends;

pub const SECRET: &str = "lead-hook-secret-4d1";

on_both_backends!(
    a_lead_with_a_wrong_or_missing_secret_is_refused_and_nothing_is_stored,
    a_lead_signed_with_hmac_is_accepted_and_stored_once_per_id,
    a_one_megabyte_lead_is_refused_with_413_and_nothing_is_stored,
    a_form_post_is_a_lead_like_its_json,
    a_pasted_lead_is_stored_and_listed_by_leads,
);

pub async fn spawn(db: Db) -> TestApp {
    TestApp::spawn_with(db, |s| s.hooks.lead_secret = Secret::new(SECRET)).await
}

/// Serves the app's HTTP routes (with the hooks the app mounted) on a
/// free loopback port; returns the hook's URL.
pub async fn serve(app: &TestApp) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/lead", listener.local_addr().unwrap());
    let state = HttpState {
        store: app.app.store.clone(),
        settings: app.app.settings.http.clone(),
        health: Health::default(),
        hooks: app.app.hooks.clone(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(soloist::http::serve(listener, state, shutdown.clone()));
    (url, shutdown)
}

pub async fn leads_stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM leads")
        .fetch_one(app.app.store.pool())
        .await
        .unwrap()
}

/// The project's own lead fixtures, then the shared ones when present.
pub fn fixture_leads() -> Vec<Value> {
    crate::fixtures::lines("leads/inbound.jsonl")
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn first_lead() -> String {
    fixture_leads()[0].to_string()
}

async fn a_lead_with_a_wrong_or_missing_secret_is_refused_and_nothing_is_stored(db: Db) {
    let app = spawn(db).await;
    let (url, shutdown) = serve(&app).await;
    let client = reqwest::Client::new();
    let body = first_lead();

    let wrong_bearer = client
        .post(&url)
        .header("Authorization", "Bearer not-the-secret")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let none = client.post(&url).body(body.clone()).send().await.unwrap();
    let forged = client
        .post(&url)
        .header(
            "X-Soloist-Signature",
            sign("not-the-secret", body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    shutdown.cancel();

    assert_eq!(wrong_bearer.status(), 401);
    assert_eq!(none.status(), 401);
    assert_eq!(forged.status(), 401);
    assert_eq!(leads_stored(&app).await, 0);
}

async fn a_lead_signed_with_hmac_is_accepted_and_stored_once_per_id(db: Db) {
    let app = spawn(db).await;
    let (url, shutdown) = serve(&app).await;
    let client = reqwest::Client::new();
    let body = first_lead();

    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Soloist-Signature", sign(SECRET, body.as_bytes()))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let bearer = client
        .post(&url)
        .header("Authorization", format!("Bearer {SECRET}"))
        .body(fixture_leads()[1].to_string())
        .send()
        .await
        .unwrap();
    shutdown.cancel();

    assert_eq!(statuses, [202, 202], "a repeat is acknowledged too");
    assert_eq!(bearer.status(), 202);
    assert_eq!(leads_stored(&app).await, 2, "the same id twice is one lead");
    let (name, email, status): (String, String, String) =
        sqlx::query_as("SELECT name, email, status FROM leads WHERE external_id = 'id:T01'")
            .fetch_one(app.app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), email.as_str(), status.as_str()),
        ("Rui Santos", "rui.santos@marisqueira.example", "new")
    );
}

async fn a_one_megabyte_lead_is_refused_with_413_and_nothing_is_stored(db: Db) {
    let app = spawn(db).await;
    let (url, shutdown) = serve(&app).await;
    let body = serde_json::json!({ "id": "big", "message": "x".repeat(1024 * 1024) }).to_string();

    let response = reqwest::Client::new()
        .post(&url)
        .header("Authorization", format!("Bearer {SECRET}"))
        .body(body)
        .send()
        .await
        .unwrap();
    shutdown.cancel();

    assert_eq!(response.status(), 413);
    assert_eq!(leads_stored(&app).await, 0);
}

async fn a_form_post_is_a_lead_like_its_json(db: Db) {
    let app = spawn(db).await;
    let (url, shutdown) = serve(&app).await;
    let client = reqwest::Client::new();
    let form =
        "id=F1&name=Clara+Dias&email=clara%40sobreiro.example&message=Our+booking+pages+are+slow";

    let response = client
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", format!("Bearer {SECRET}"))
        .body(form)
        .send()
        .await
        .unwrap();
    let not_a_lead = client
        .post(&url)
        .header("Authorization", format!("Bearer {SECRET}"))
        .body("{\"name\": \"no message\"}")
        .send()
        .await
        .unwrap();
    shutdown.cancel();

    assert_eq!(response.status(), 202);
    assert_eq!(
        not_a_lead.status(),
        422,
        "a body without a message is refused"
    );
    let (email, message): (String, String) =
        sqlx::query_as("SELECT email, message FROM leads WHERE external_id = 'id:F1'")
            .fetch_one(app.app.store.pool())
            .await
            .unwrap();
    assert_eq!(email, "clara@sobreiro.example");
    assert_eq!(message, "Our booking pages are slow");
    assert_eq!(leads_stored(&app).await, 1);
}

async fn a_pasted_lead_is_stored_and_listed_by_leads(db: Db) {
    let app = spawn(db).await;

    let empty = texts(&app.say("/leads").await);
    let stored = texts(
        &app.say("/lead Hi, I'm Leo from Park Bikes, how much is a quick logo?")
            .await,
    );
    let again = texts(
        &app.say("/lead Hi, I'm Leo from Park Bikes, how much is a quick logo?")
            .await,
    );
    let nothing = texts(&app.say("/lead").await);
    let listed = texts(&app.say("/leads").await);

    assert!(empty.contains("No leads yet"), "{empty}");
    assert!(stored.contains("Lead stored"), "{stored}");
    assert!(again.contains("stored already"), "{again}");
    assert!(nothing.contains("Paste the lead"), "{nothing}");
    assert!(
        listed.contains("Park Bikes") && listed.contains("new"),
        "{listed}"
    );
    assert_eq!(leads_stored(&app).await, 1);
}

/// The structured answer the scripted fast tier gives for a fixture lead:
/// its fields, with the budget, timeline and need read from its message
/// the way a careful model would (no field is invented; the lead's text
/// never chooses its tier). The flow tests queue it on the fake model.
pub fn scripted_extraction(lead: &Value) -> Value {
    let text = |k: &str| {
        lead.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let message = text("message").unwrap_or_default();
    let lower = message.to_lowercase();
    const WHEN: &[&str] = &[
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "next week",
        "next month",
        "next year",
        "spring",
        "summer",
        "autumn",
        "winter",
    ];
    serde_json::json!({
        "name": text("name"),
        "company": text("company"),
        "email": text("email"),
        "budget": budget(&lower),
        "timeline": WHEN.iter().find(|w| lower.contains(*w)),
        "need": message,
        "website": text("website"),
        "team_size": text("size").as_deref().and_then(soloist::leads::score::first_number),
    })
}

/// "about 6k", "200 euros", "€2,000": the first amount stated, in euros.
fn budget(lower: &str) -> Option<f64> {
    let words: Vec<&str> = lower.split_whitespace().collect();
    words.iter().enumerate().find_map(|(i, word)| {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '€');
        let number = |s: &str| s.replace(',', "").parse::<f64>().ok();
        if let Some(thousands) = word.strip_suffix('k').and_then(number) {
            return Some(thousands * 1000.0);
        }
        if let Some(euros) = word.strip_prefix('€').and_then(number) {
            return Some(euros);
        }
        let next = words.get(i + 1).copied().unwrap_or_default();
        number(word).filter(|_| next.starts_with("eur"))
    })
}

/// The project's own lead fixtures (not the shared ones).
pub fn own_fixture_leads() -> Vec<Value> {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/leads/inbound.jsonl"),
    )
    .unwrap()
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// The rules alone (no database, no model): each own fixture's scripted
/// extraction scores to the tier its owner expects. The flow test
/// (`leads_flow`) runs the same leads through the whole flow.
#[test]
fn the_project_lead_fixtures_score_to_their_expected_tiers() {
    let criteria = Criteria::default();
    for lead in &own_fixture_leads() {
        let fields =
            soloist::leads::steps::read_extraction(&scripted_extraction(lead).to_string(), lead);
        let scored = score(&fields, &criteria);
        let expected = Tier::parse(lead["expected_tier"].as_str().unwrap()).unwrap();
        assert_eq!(
            scored.tier, expected,
            "{}: {:?} ({})",
            lead["id"], scored.reasons, scored.score
        );
    }
}

#[test]
fn the_scripted_model_reads_budgets_as_a_model_would() {
    assert_eq!(budget("budget about 6k."), Some(6000.0));
    assert_eq!(budget("we only have like 200 euros"), Some(200.0));
    assert_eq!(budget("a retainer, €2,000 a month"), Some(2000.0));
    assert_eq!(budget("about 18 pages"), None);
}

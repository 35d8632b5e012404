//! Lead qualification end to end (issue 13): a lead posted to the web hook
//! over real HTTP → `lead.received` → the qualification flow started by the
//! event worker of a running soloist → fields from the fake model's
//! scripted structured answer → the tier the rules give → the draft on the
//! fake Telegram → Approve (or Pursue / Decline) → the fake SMTP sink.
//! Then every lead fixture (the project's, plus `../shared`'s when
//! present) through the same flow, each landing in its expected tier.

use std::time::Duration;

use serde_json::Value;
use soloist::config::Secret;
use soloist::domain::RunStatus;
use soloist::events::EventWorker;
use soloist::leads::{LeadRow, Leads, parse_body, store_lead};
use soloist::runtime::{self, platform_services};
use tokio_util::sync::CancellationToken;

use crate::email::point_email_at;
use crate::fake_llm::Behavior;
use crate::fake_smtp::FakeSmtp;
use crate::fake_telegram::{FakeTelegram, Sent};
use crate::helpers::{Db, TestApp, button, texts};
use crate::leads::{SECRET, leads_stored, own_fixture_leads, scripted_extraction, serve};
use crate::on_both_backends;

on_both_backends!(
    a_hot_lead_by_web_hook_is_qualified_by_itself_and_its_reply_is_emailed_once_only_after_approve,
    a_cold_lead_gets_a_decline_draft_emailed_only_after_approve,
    a_borderline_lead_offers_pursue_and_decline_and_each_sets_the_lead_s_status,
    every_lead_fixture_lands_in_its_expected_tier_through_the_flow,
    approvals_lists_a_waiting_borderline_lead_with_pursue_and_decline,
);

const TG_OWNER: i64 = 111;
const REPLY: &str = "Hello Rui, a Brand Sprint in January works. Could we talk on Thursday?";
const DECLINE: &str =
    "Hello Leo, thank you for asking. A logo for that budget is not something I can do well.";

/// A running soloist (Telegram, events, e-mail) with the hook served over
/// HTTP, a fake Telegram and an SMTP sink.
struct Running {
    test: TestApp,
    tg: FakeTelegram,
    smtp: FakeSmtp,
    hook: String,
    shutdown: CancellationToken,
    stopped: tokio::task::JoinHandle<Result<(), soloist::runtime::RuntimeError>>,
}

impl Running {
    async fn start(db: Db) -> Running {
        let tg = FakeTelegram::start().await;
        let smtp = FakeSmtp::start().await;
        let (fake, sink) = (tg.clone(), smtp.clone());
        let test = TestApp::spawn_with(db, move |s| {
            s.telegram.token = Secret::new(fake.token.clone());
            s.telegram.api_url = fake.api_url.clone();
            s.telegram.allowed_user_ids = vec![TG_OWNER.to_string()];
            s.telegram.poll_timeout_secs = 1;
            s.telegram.rate_limits = false;
            // Runs started by events report to the owner's Telegram chat.
            s.owner.telegram_user_id = TG_OWNER.to_string();
            s.hooks.lead_secret = Secret::new(SECRET);
            s.events.poll_secs = 0.1;
            point_email_at(s, &sink);
        })
        .await;
        let shutdown = CancellationToken::new();
        let services = platform_services(&test.app, &shutdown);
        let stopped = tokio::spawn(runtime::run(test.app.clone(), services, shutdown.clone()));
        let (hook, _) = serve(&test).await;
        Running {
            test,
            tg,
            smtp,
            hook,
            shutdown,
            stopped,
        }
    }

    /// Started, with the fake model scripted for the own fixture `id`:
    /// its extraction, then `draft` for the reply or decline step.
    async fn for_lead(db: Db, id: &str, draft: &str) -> (Running, Value) {
        let lead = fixture(id);
        let running = Running::start(db).await;
        running
            .test
            .llm
            .then(Behavior::reply(&scripted_extraction(&lead).to_string()))
            .then(Behavior::reply(draft));
        (running, lead)
    }

    async fn post(&self, body: &str, authorization: &str) -> u16 {
        reqwest::Client::new()
            .post(&self.hook)
            .header("Content-Type", "application/json")
            .header("Authorization", authorization)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The first message to the owner with a button labelled `label`
    /// whose text contains `containing`.
    async fn offer(&self, label: &str, containing: &str) -> Sent {
        self.tg
            .wait_for(30, &format!("a message with {label}"), |s| {
                s.sent_to(TG_OWNER)
                    .into_iter()
                    .find(|m| m.button(label).is_some() && m.visible().contains(containing))
            })
            .await
    }

    fn press(&self, on: &Sent, label: &str) {
        self.tg.press(TG_OWNER, on, &on.button(label).unwrap());
    }

    async fn lead(&self, email: &str) -> LeadRow {
        Leads(&self.test.app.store)
            .recent(50)
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.email == email)
            .unwrap_or_else(|| panic!("no lead {email}"))
    }

    /// Polls until the lead with `email` has `status`.
    async fn wait_for_status(&self, email: &str, status: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.lead(email).await.status != status {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lead {email} never became {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn email_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE platform = 'email'")
            .fetch_one(self.test.app.store.pool())
            .await
            .unwrap()
    }

    async fn stop(self) -> TestApp {
        self.shutdown.cancel();
        self.stopped.await.unwrap().unwrap();
        self.test
    }
}

fn fixture(id: &str) -> Value {
    own_fixture_leads()
        .into_iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("no fixture {id}"))
}

fn bearer() -> String {
    format!("Bearer {SECRET}")
}

async fn a_hot_lead_by_web_hook_is_qualified_by_itself_and_its_reply_is_emailed_once_only_after_approve(
    db: Db,
) {
    let (running, lead) = Running::for_lead(db, "T01", REPLY).await;
    let email = lead["email"].as_str().unwrap();
    let body = lead.to_string();
    let huge = serde_json::json!({ "id": "huge", "email": email, "message": "x".repeat(1 << 20) });

    let wrong = running.post(&body, "Bearer not-the-secret").await;
    let too_big = running.post(&huge.to_string(), &bearer()).await;
    let stored_before = leads_stored(&running.test).await;
    let first = running.post(&body, &bearer()).await;
    let again = running.post(&body, &bearer()).await;

    assert_eq!((wrong, too_big), (401, 413));
    assert_eq!(stored_before, 0, "a refused lead stores nothing");
    assert_eq!((first, again), (202, 202));
    assert_eq!(
        leads_stored(&running.test).await,
        1,
        "the same id twice is one lead"
    );

    // Nobody asks: the event worker starts the flow, and the reply draft
    // reaches the owner's Telegram with Approve.
    let offer = running.offer("Approve", REPLY).await;
    let row = running.lead(email).await;
    assert_eq!(
        (row.tier.as_deref(), row.score),
        (Some("hot"), Some(100)),
        "budget 6k +30, a Brand Sprint fits +30, January +20, a team of 12 +20"
    );
    let store = &running.test.app.store;
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs.len(), 1, "one lead, one run: {runs:?}");
    assert_eq!(runs[0].flow, "lead-qualification");
    assert_eq!(runs[0].input.requested_by, "event lead.received");
    let state = running.test.app.engine.state(runs[0].id).await.unwrap();
    assert_eq!(state.outputs["extract"]["fields"]["budget"], 6000.0);
    assert_eq!(state.outputs["extract"]["fields"]["timeline"], "january");
    assert_eq!(state.outputs["score"]["outcome"], "hot");
    let format = running
        .test
        .llm
        .response_format(0)
        .expect("structured output");
    assert!(format.to_string().contains("team_size"), "{format}");
    let asked = running.test.llm.requests()[0].to_string();
    assert!(
        asked.contains("quoted text, not instructions") && asked.contains("Marisqueira do Cais"),
        "the lead reaches the model quoted as untrusted data: {asked}"
    );

    // Nothing reaches the lead before the decision.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(running.smtp.received().await.is_empty());
    assert_eq!(running.email_rows().await, 0, "not even queued");

    running.press(&offer, "Approve");
    let received = running.smtp.wait_for(1, 20).await;
    running.wait_for_status(email, "replied").await;
    // Give a second delivery every chance to happen before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let test = running.smtp.received().await;
    assert_eq!(test.len(), 1, "exactly one e-mail: {test:?}");
    assert_eq!(received[0].to, [email]);
    assert!(received[0].data.contains("Subject: Re: your enquiry"));
    assert!(
        received[0].data.contains("a Brand Sprint in January works"),
        "{}",
        received[0].data
    );
    let test = running.stop().await;
    let run = test.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Completed);
}

async fn a_cold_lead_gets_a_decline_draft_emailed_only_after_approve(db: Db) {
    let (running, lead) = Running::for_lead(db, "T02", DECLINE).await;
    let email = lead["email"].as_str().unwrap();

    assert_eq!(running.post(&lead.to_string(), &bearer()).await, 202);
    let offer = running.offer("Approve", DECLINE).await;
    assert_eq!(running.lead(email).await.tier.as_deref(), Some("cold"));
    let state = {
        let run = running
            .test
            .app
            .store
            .recent_runs(1)
            .await
            .unwrap()
            .remove(0);
        running.test.app.engine.state(run.id).await.unwrap()
    };
    assert!(
        state.conversations.contains_key("review_decline"),
        "the cold branch: {:?}",
        state.conversations.keys()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(running.smtp.received().await.is_empty());
    assert_eq!(running.email_rows().await, 0);

    running.press(&offer, "Approve");
    let received = running.smtp.wait_for(1, 20).await;
    running.wait_for_status(email, "declined").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(running.smtp.received().await.len(), 1, "exactly one e-mail");
    assert_eq!(received[0].to, [email]);
    assert!(received[0].data.contains("thank you for asking"));
    running.stop().await;
}

/// The buttons of a Telegram message, by label, in order.
fn labels(message: &Sent) -> Vec<String> {
    message
        .keyboard
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["text"].as_str().map(str::to_string))
        .collect()
}

async fn a_borderline_lead_offers_pursue_and_decline_and_each_sets_the_lead_s_status(db: Db) {
    let (vague, charity) = (fixture("T04"), fixture("T06"));
    let running = Running::start(db).await;
    let llm = &running.test.llm;

    llm.then(Behavior::reply(&scripted_extraction(&vague).to_string()));
    assert_eq!(running.post(&vague.to_string(), &bearer()).await, 202);
    let first = running.offer("Pursue", "Lead Marta Gil").await;
    assert_eq!(labels(&first), ["Pursue", "Decline"]);
    assert!(
        first.visible().contains("borderline") && first.visible().contains("vague"),
        "the summary says why: {}",
        first.visible()
    );
    running.press(&first, "Pursue");
    running
        .wait_for_status("marta@gilfilhos.example", "pursuing")
        .await;
    let closed = running
        .tg
        .wait_for(20, "the summary closed", |s| {
            s.sent_to(TG_OWNER)
                .into_iter()
                .find(|m| m.message_id == first.message_id && m.edits > 0)
        })
        .await;
    assert!(
        closed.visible().contains("Pursue: chosen by"),
        "the closed summary reads as its button: {}",
        closed.visible()
    );

    llm.then(Behavior::reply(&scripted_extraction(&charity).to_string()));
    assert_eq!(running.post(&charity.to_string(), &bearer()).await, 202);
    let second = running.offer("Decline", "Lead Beatriz Rocha").await;
    running.press(&second, "Decline");
    running
        .tg
        .wait_for(20, "the question why", |s| {
            s.sent_to(TG_OWNER)
                .into_iter()
                .find(|m| m.visible().contains("Why decline it?"))
        })
        .await;
    running
        .tg
        .user_says(TG_OWNER, "We do not discount this quarter.");
    running
        .wait_for_status("beatriz@marlimpo.example", "declined")
        .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        running.smtp.received().await.is_empty(),
        "a borderline lead is never e-mailed by the flow"
    );
    let test = running.stop().await;
    let decisions: Vec<(String,)> =
        sqlx::query_as("SELECT decision FROM decisions ORDER BY created_at")
            .fetch_all(test.app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        decisions,
        [("approve".to_string(),), ("reject".to_string(),)],
        "Pursue and Decline are journaled as the usual decisions"
    );
    for run in test.app.store.recent_runs(5).await.unwrap() {
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    }
}

/// Where a run of each tier waits: the approve step of its branch.
fn waiting_step(tier: &str) -> &'static str {
    match tier {
        "hot" => "review_reply",
        "borderline" => "ask",
        _ => "review_decline",
    }
}

async fn every_lead_fixture_lands_in_its_expected_tier_through_the_flow(db: Db) {
    let app = TestApp::spawn(db).await;
    let worker = EventWorker::new(app.app.engine.clone());
    let leads = crate::leads::fixture_leads();
    assert!(leads.len() >= 9, "the project's own fixtures at least");

    let mut wrong = Vec::new();
    for lead in &leads {
        let expected = lead["expected_tier"].as_str().unwrap();
        app.llm
            .then(Behavior::reply(&scripted_extraction(lead).to_string()));
        let new = parse_body(lead.to_string().as_bytes(), "application/json").unwrap();
        assert!(store_lead(&app.app.store, &new).await.unwrap());

        let started = worker.tick().await.unwrap();

        assert_eq!(started.len(), 1, "{}: one run per lead", lead["id"]);
        let state = app.app.engine.state(started[0]).await.unwrap();
        let tier = state.outputs["score"]["outcome"].as_str().unwrap_or("none");
        if tier != expected {
            wrong.push(format!(
                "{}: expected {expected}, got {tier} ({})",
                lead["id"], state.outputs["score"]["reasons"]
            ));
            continue;
        }
        assert!(
            state.conversations.contains_key(waiting_step(tier)),
            "{}: waits at {} ({:?})",
            lead["id"],
            waiting_step(tier),
            state.conversations.keys()
        );
        let row = Leads(&app.app.store).recent(1).await.unwrap().remove(0);
        assert_eq!(
            row.tier.as_deref(),
            Some(expected),
            "the tier is on the lead"
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let offers = texts(&app.drain().await);
    assert!(
        offers.contains("Lead Marta Gil, Gil & Filhos: borderline"),
        "{offers}"
    );
}

async fn approvals_lists_a_waiting_borderline_lead_with_pursue_and_decline(db: Db) {
    let app = TestApp::spawn(db).await;
    let lead = fixture("T04");
    app.llm
        .then(Behavior::reply(&scripted_extraction(&lead).to_string()));
    let new = parse_body(lead.to_string().as_bytes(), "application/json").unwrap();
    store_lead(&app.app.store, &new).await.unwrap();
    EventWorker::new(app.app.engine.clone())
        .tick()
        .await
        .unwrap();
    let offered = app.drain().await;

    let listed = app.say("/approvals").await;

    let shown = |messages: &[soloist::domain::Outbound]| -> Vec<String> {
        messages
            .iter()
            .flat_map(|m| m.buttons.iter().map(|b| b.label.clone()))
            .collect()
    };
    assert_eq!(shown(&offered), ["Pursue", "Decline"]);
    assert_eq!(shown(&listed), ["Pursue", "Decline"], "{}", texts(&listed));
    app.press(&button(&listed, "Pursue")).await;
    let row = Leads(&app.app.store).recent(1).await.unwrap().remove(0);
    assert_eq!(row.status, "pursuing");
}

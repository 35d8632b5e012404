//! Events and choreography: an event is stored once per key, in the
//! transaction of its cause; a flow with `on = "..."` starts once per event
//! however many workers race for it; a run started by an event says so.

use std::collections::BTreeSet;

use serde_json::json;
use soloist::domain::{Platform, RunStatus};
use soloist::events::EventWorker;

use crate::fake_llm::Behavior;
use crate::helpers::{Db, TestApp, button, texts};
use crate::on_both_backends;

on_both_backends!(
    emitting_the_same_key_twice_is_one_event,
    an_on_flow_starts_from_an_emitted_event_and_its_run_names_the_event,
    an_event_is_consumed_once_by_two_workers_racing,
    an_approval_emits_draft_approved,
    a_failed_run_emits_run_failed_and_tells_the_owner,
);

/// Greets a new lead: its prompt reads the event's payload.
const GREET: &str = r#"
name = "greet"
description = "Answer a new lead."
cost_label = "balanced"
on = "contact.received"

[[steps]]
name = "write"
kind = "generate"
tier = "fast"
system = "system"
prompt = "greet"
max_tokens = 100
"#;

/// Does nothing a model is needed for: the race test counts runs only.
const NOTE: &str = r#"
name = "note"
description = "Note a new lead."
cost_label = "low-cost"
on = "contact.received"

[[steps]]
name = "brief"
kind = "context"
"#;

async fn emitting_the_same_key_twice_is_one_event(db: Db) {
    let app = TestApp::spawn(db).await;
    let store = &app.app.store;

    let first = store
        .emit("contact.received", json!({ "name": "Ana" }), "lead:1")
        .await
        .unwrap();
    let second = store
        .emit(
            "contact.received",
            json!({ "name": "Ana, again" }),
            "lead:1",
        )
        .await
        .unwrap();

    assert!(first && !second);
    let events = store.events_of_kind("contact.received").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["name"], "Ana");
}

async fn an_on_flow_starts_from_an_emitted_event_and_its_run_names_the_event(db: Db) {
    let app = TestApp::spawn(db).await;
    let prompts = app.home.path().join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(
        prompts.join("greet.md"),
        "Greet {{ event.payload.name }} of {{ event.payload.company }}.",
    )
    .unwrap();
    let app = app.with_flow("greet", GREET).await;
    app.llm.then(Behavior::reply("Hello Ana!"));
    let payload = json!({ "name": "Ana Lopes", "company": "Vinho Verde Lda" });
    app.app
        .store
        .emit("contact.received", payload, "lead:ana")
        .await
        .unwrap();
    let worker = EventWorker::new(app.app.engine.clone());

    let started = worker.tick().await.unwrap();
    let again = worker.tick().await.unwrap();

    assert_eq!(started.len(), 1);
    assert!(again.is_empty(), "the event was consumed: {again:?}");
    let run = started[0];
    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.outputs["write"]["text"], "Hello Ana!");
    let request = app.llm.requests().last().unwrap().to_string();
    assert!(
        request.contains("Ana Lopes") && request.contains("Vinho Verde Lda"),
        "{request}"
    );
    let event = app.app.store.event_for_run(run).await.unwrap().unwrap();
    assert_eq!(event.kind, "contact.received");
    app.drain().await;
    let shown = texts(&app.say(&format!("/run {}", run.short())).await);
    assert!(
        shown.contains(&format!("Started by event contact.received ({})", event.id)),
        "{shown}"
    );
}

async fn an_event_is_consumed_once_by_two_workers_racing(db: Db) {
    let app = TestApp::spawn(db).await.with_flow("note", NOTE).await;
    let second_process = app.restart(|_| {}).await;
    for n in 0..20 {
        let payload = json!({ "name": format!("lead {n}") });
        app.app
            .store
            .emit("contact.received", payload, &format!("lead:{n}"))
            .await
            .unwrap();
    }
    let one = EventWorker::new(app.app.engine.clone());
    let two = EventWorker::new(second_process.engine.clone());

    let (a, b) = tokio::join!(one.tick(), two.tick());

    let (a, b) = (a.unwrap(), b.unwrap());
    let all: BTreeSet<_> = a.iter().chain(&b).collect();
    assert_eq!(a.len() + b.len(), 20, "one run per event: {a:?} {b:?}");
    assert_eq!(all.len(), 20);
    assert_eq!(app.app.store.event_runs().await.unwrap().len(), 20);
    assert_eq!(app.count("runs").await, 20);
    assert!(one.tick().await.unwrap().is_empty());
    assert!(two.tick().await.unwrap().is_empty());
}

async fn an_approval_emits_draft_approved(db: Db) {
    let app = TestApp::spawn(db).await;
    let draft = app.say("/draft a post about the Brand Sprint").await;
    assert!(
        app.app
            .store
            .events_of_kind("draft.approved")
            .await
            .unwrap()
            .is_empty()
    );

    app.press(&button(&draft, "Approve")).await;

    let events = app
        .app
        .store
        .events_of_kind("draft.approved")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["flow"], "draft");
    assert_eq!(events[0].payload["text"], crate::fake_llm::DEFAULT_DRAFT);
}

async fn a_failed_run_emits_run_failed_and_tells_the_owner(db: Db) {
    let app = TestApp::spawn_with(db, |settings| {
        settings.digest.chats = vec!["telegram:4242".into()];
    })
    .await;
    app.llm
        .always(Behavior::Status(500, "upstream exploded".into()));

    app.say("/draft a post").await;

    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Failed);
    let events = app.app.store.events_of_kind("run.failed").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["run_id"], run.id.to_string());
    assert_eq!(events[0].payload["step"], "write");
    let owner = app
        .app
        .store
        .pending_outbox(Platform::Telegram, 10)
        .await
        .unwrap();
    assert_eq!(owner.len(), 1, "{owner:?}");
    assert_eq!(owner[0].chat.chat_id, "4242");
    assert!(
        owner[0].message.text.contains("failed at step 'write'"),
        "{}",
        owner[0].message.text
    );
}

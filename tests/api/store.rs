//! Store conformance: the same behaviour on PostgreSQL and SQLite.

use soloist::domain::{
    ChatKind, ChatRef, Inbound, InboundContent, JournalEvent, Origin, Outbound, Platform, RunInput,
};
use soloist::store::{InboundRecord, LedgerEntry, NewRun, Store};

use crate::helpers::{Db, TestDb};
use crate::on_both_backends;

on_both_backends!(
    creating_a_run_twice_with_one_key_returns_the_same_run,
    migrating_twice_is_harmless,
    an_update_is_fresh_then_unfinished_then_duplicate,
    the_outbox_delivers_in_order_and_once,
    concurrent_workers_never_claim_the_same_run,
    ledger_rows_with_and_without_a_price_alternate_on_one_connection,
);

async fn open(db: Db) -> (TestDb, Store) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 8).await.unwrap();
    (test_db, store)
}

fn new_run(key: &str) -> NewRun {
    NewRun {
        flow: "draft".into(),
        chat: ChatRef::new(Platform::Console, "console"),
        input: RunInput {
            request: "a post".into(),
            requested_by: "Maya".into(),
            event: None,
        },
        idempotency_key: key.into(),
    }
}

async fn creating_a_run_twice_with_one_key_returns_the_same_run(db: Db) {
    let (_db, store) = open(db).await;

    let (first, created) = store.create_run(&new_run("k1")).await.unwrap();
    let (second, created_again) = store.create_run(&new_run("k1")).await.unwrap();

    assert!(created && !created_again);
    assert_eq!(first, second);
    let journal = store.journal(first).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert!(matches!(journal[0], JournalEvent::Started { .. }));
}

async fn migrating_twice_is_harmless(db: Db) {
    let (_db, store) = open(db).await;
    store.migrate().await.unwrap();
    assert_eq!(store.pending_migrations().await.unwrap(), 0);
}

async fn an_update_is_fresh_then_unfinished_then_duplicate(db: Db) {
    let (_db, store) = open(db).await;
    let inbound = Inbound {
        chat: ChatRef::new(Platform::Telegram, "42"),
        update_key: "1001".into(),
        user_id: "7".into(),
        user_name: "Maya".into(),
        message_id: Some("5".into()),
        content: InboundContent::Text("hello".into()),
        chat_kind: ChatKind::Private,
        origin: Origin::Typed,
    };

    assert_eq!(
        store.record_inbound(&inbound).await.unwrap(),
        InboundRecord::Fresh
    );
    assert_eq!(
        store.record_inbound(&inbound).await.unwrap(),
        InboundRecord::Unfinished
    );
    store
        .finish_inbound(&inbound, &[Outbound::text("hi")])
        .await
        .unwrap();
    store
        .finish_inbound(&inbound, &[Outbound::text("hi")])
        .await
        .unwrap();
    assert_eq!(
        store.record_inbound(&inbound).await.unwrap(),
        InboundRecord::Duplicate
    );
    assert_eq!(
        store
            .pending_outbox(Platform::Telegram, 10)
            .await
            .unwrap()
            .len(),
        1,
        "replies are queued once"
    );
}

async fn the_outbox_delivers_in_order_and_once(db: Db) {
    let (_db, store) = open(db).await;
    let chat = ChatRef::new(Platform::Console, "console");
    for n in 0..5 {
        store
            .enqueue(&chat, &Outbound::text(format!("message {n}")))
            .await
            .unwrap();
    }

    let pending = store.pending_outbox(Platform::Console, 10).await.unwrap();
    let order: Vec<_> = pending.iter().map(|m| m.message.text.clone()).collect();
    for message in &pending[..2] {
        store
            .mark_delivered(message.id, Some("platform-1"))
            .await
            .unwrap();
    }

    assert_eq!(
        order,
        (0..5).map(|n| format!("message {n}")).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .pending_outbox(Platform::Console, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        store
            .pending_outbox(Platform::Telegram, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrent_workers_never_claim_the_same_run(db: Db) {
    let (_db, store) = open(db).await;
    for n in 0..20 {
        store
            .create_run(&new_run(&format!("run-{n}")))
            .await
            .unwrap();
    }

    let mut workers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(claimed) = store
                .claim_next_runnable(&format!("w{w}"), 60_000)
                .await
                .unwrap()
            {
                mine.push(claimed.run.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }

    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, 20, "every run claimed");
    assert_eq!(all.len(), 20, "no run claimed twice");
}

/// Regression: sqlx's `Any` driver prepares a statement with the parameter
/// types of its first use; a NULL float first made every later priced row
/// fail on PostgreSQL ("incorrect binary data format").
async fn ledger_rows_with_and_without_a_price_alternate_on_one_connection(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 1).await.unwrap();
    let entry = |cost: Option<f64>| LedgerEntry {
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        tier: "quality".into(),
        input_tokens: 10,
        output_tokens: 5,
        cost_usd: cost,
        outcome: "ok".into(),
        ..LedgerEntry::default()
    };

    for cost in [None, Some(0.25), None, Some(0.5)] {
        store.record_call(&entry(cost)).await.unwrap();
    }

    let summary = store.cost_since(0).await.unwrap();
    assert_eq!(summary.calls, 4);
    assert!((summary.cost_usd - 0.75).abs() < 1e-9);
}

//! Store conformance: the same behaviour on PostgreSQL and SQLite.

use soloist::domain::{
    ChatKind, ChatRef, Inbound, InboundContent, JournalEvent, Origin, Outbound, Platform, RunInput,
};
use soloist::store::{Caps, InboundRecord, LedgerEntry, NewRun, Store};

use crate::helpers::{Db, TestDb};
use crate::on_both_backends;

on_both_backends!(
    creating_a_run_twice_with_one_key_returns_the_same_run,
    migrating_twice_is_harmless,
    an_update_is_fresh_then_unfinished_then_duplicate,
    a_batch_of_arrivals_records_each_update_once_and_logs_them_in_order,
    the_outbox_delivers_in_order_and_once,
    concurrent_workers_never_claim_the_same_run,
    ledger_rows_with_and_without_a_price_alternate_on_one_connection,
    a_read_is_answered_while_a_write_transaction_is_open_and_sees_it_once_committed,
    many_reservations_at_once_never_pass_the_cap_and_their_settlements_add_up,
);

/// SQLite writes commits to its log and flushes the log after them, one
/// flush for all the commits made while the previous flush ran (group
/// commit; the sharing itself is proven in durability.rs): a commit
/// returns only after a flush that began after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_return_only_after_a_flush_of_the_log_begun_after_them() {
    let (_db, store) = open(Db::Sqlite).await;
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        synchronous, 1,
        "the writer should leave flushing to the group (NORMAL)"
    );

    for n in 0..3 {
        let before = store.log_flushes().unwrap();
        store
            .create_run(&new_run(&format!("alone-{n}")))
            .await
            .unwrap();
        // At least one: the once-a-second safety net may flush as well.
        assert!(
            store.log_flushes().unwrap() > before,
            "a commit returned without a flush after it"
        );
    }

    let before = store.log_flushes().unwrap();
    let lanes: Vec<_> = (0..64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.create_run(&new_run(&format!("lane-{n}"))).await.unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for lane in lanes {
        lane.await.unwrap();
    }
    let flushes = store.log_flushes().unwrap() - before;
    assert!(flushes >= 1, "64 commits returned without a flush");
    let runs: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE idempotency_key LIKE 'lane-%'")
            .fetch_one(store.reads())
            .await
            .unwrap();
    assert_eq!(runs, 64);

    let pg_or_memory = Store::open("sqlite::memory:", 1).await.unwrap();
    assert_eq!(
        pg_or_memory.log_flushes(),
        None,
        "an in-memory database has no log to flush"
    );
}

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

/// The front door records a platform's batch in a few statements: each
/// raw update once (a redelivered one, in this batch or the last, is not
/// fresh), each inbound once (an update key recorded before under another
/// raw id is not logged again), the texts in the conversation log in the
/// batch's order, one row a chat; then an update that only reads is
/// answered with one mark.
async fn a_batch_of_arrivals_records_each_update_once_and_logs_them_in_order(db: Db) {
    use soloist::store::RecordedUpdate;

    let (_db, store) = open(db).await;
    let arrival = |id: i64, chat: &str, key: &str, text: &str| {
        (
            RecordedUpdate {
                update_id: id,
                chat_id: chat.into(),
                payload: format!("{{\"update_id\":{id},\"text\":\"{text}\"}}"),
            },
            Inbound {
                chat: ChatRef::new(Platform::Telegram, chat),
                update_key: key.into(),
                user_id: "7".into(),
                user_name: "Maya".into(),
                message_id: None,
                content: InboundContent::Text(text.into()),
                chat_kind: ChatKind::Private,
                origin: Origin::Typed,
            },
        )
    };
    let first = store
        .record_arrivals(
            Platform::Telegram,
            &[arrival(1, "a", "k1", "one"), arrival(2, "b", "k2", "two")],
        )
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|u| u.update_id).collect::<Vec<_>>(),
        [1, 2]
    );
    let second = store
        .record_arrivals(
            Platform::Telegram,
            &[
                arrival(2, "b", "k2", "two"),
                arrival(3, "a", "k3", "three"),
                arrival(3, "a", "k3", "three"),
                arrival(4, "a", "k1", "one again"),
                arrival(5, "a", "k5", "five"),
                arrival(7, "b", "k7", "seven"),
                arrival(8, "b", "k7", "seven again"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|u| u.update_id).collect::<Vec<_>>(),
        [3, 4, 5, 7, 8],
        "raw updates seen before are not fresh"
    );
    assert_eq!(
        second[0].payload, "{\"update_id\":3,\"text\":\"three\"}",
        "the payload is stored as given"
    );
    let logged: Vec<(String, String)> =
        sqlx::query_as("SELECT chat_id, text FROM messages WHERE direction = 'in' ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let logged: Vec<(&str, &str)> = logged
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        logged,
        [
            ("a", "one"),
            ("b", "two"),
            ("a", "three"),
            ("a", "five"),
            ("b", "seven")
        ],
        "each inbound logged once, in order"
    );
    let chats: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(chats, 2);
    let payload: String =
        sqlx::query_scalar("SELECT payload FROM platform_updates WHERE update_id = 5")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(payload, "{\"update_id\":5,\"text\":\"five\"}");

    // Recorded on arrival, answered by one mark; a second answer is refused.
    let (_, five) = arrival(5, "a", "k5", "five");
    assert!(
        store
            .answer_in_one(&five, &[Outbound::text("hi")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .answer_in_one(&five, &[Outbound::text("hi")])
            .await
            .unwrap()
    );
    // Never recorded before: recorded, logged and answered at once.
    let (_, six) = arrival(6, "c", "k6", "six");
    assert!(
        store
            .answer_in_one(&six, &[Outbound::text("hello")])
            .await
            .unwrap()
    );
    let (pending, logged): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending'),
                (SELECT COUNT(*) FROM messages WHERE direction = 'in')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((pending, logged), (2, 6));
}

/// SQLite has one writer connection; reads have connections of their own
/// (the write-ahead log lets them read beside it), so a status or
/// retrieval read does not wait for another task's transaction.
async fn a_read_is_answered_while_a_write_transaction_is_open_and_sees_it_once_committed(db: Db) {
    let (_db, store) = open(db).await;
    let (first, _) = store.create_run(&new_run("read-1")).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let (second, _) = tx.create_run(&new_run("read-2")).await.unwrap();

    let read = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        (
            store.run(first).await.unwrap(),
            store.run(second).await.unwrap(),
            store.journal(first).await.unwrap(),
        )
    })
    .await
    .expect("a read waited for an open write transaction");
    assert!(read.0.is_some());
    assert!(read.1.is_none(), "a read saw an uncommitted run");
    assert_eq!(read.2.len(), 1);

    tx.commit().await.unwrap();
    assert!(store.run(second).await.unwrap().is_some());
}

/// Forty lanes asking an eighth of the day's cap each at the same moment
/// get exactly eight grants, and the month's row agrees; settled at once,
/// the periods hold exactly what was spent, nothing is left reserved, and
/// every call has its ledger row.
async fn many_reservations_at_once_never_pass_the_cap_and_their_settlements_add_up(db: Db) {
    let (_db, store) = open(db).await;
    let caps = Caps {
        daily_usd: 1.0,
        monthly_usd: 100.0,
    };
    let asks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .reserve_budget("2026-12-01", "2026-12", 0.125, caps)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = Vec::new();
    let mut refused = 0;
    for ask in asks {
        match ask.await.unwrap() {
            Ok(held) => granted.push(held),
            Err(refusal) => {
                assert_eq!(refusal.which, "today's");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (granted.len(), refused),
        (8, 32),
        "an eighth each: eight fit"
    );
    let (day, month) = store
        .budget_status("2026-12-01", "2026-12", caps)
        .await
        .unwrap();
    assert_eq!((day.reserved_usd, month.reserved_usd), (1.0, 1.0));

    let settles: Vec<_> = granted
        .into_iter()
        .map(|held| {
            tokio::spawn(async move {
                let entry = LedgerEntry {
                    provider: "openai".into(),
                    model: "gpt-4o-mini".into(),
                    tier: "fast".into(),
                    cost_usd: Some(0.0625),
                    outcome: "ok".into(),
                    ..LedgerEntry::default()
                };
                held.settle(Some(&entry)).await.unwrap();
            })
        })
        .collect();
    for settle in settles {
        settle.await.unwrap();
    }
    let (day, month) = store
        .budget_status("2026-12-01", "2026-12", caps)
        .await
        .unwrap();
    assert_eq!((day.spent_usd, day.reserved_usd), (0.5, 0.0));
    assert_eq!((month.spent_usd, month.reserved_usd), (0.5, 0.0));
    assert_eq!(store.cost_since(0).await.unwrap().calls, 8);
    // Nothing is left for the drop of a settled guard to give back.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (day, _) = store
        .budget_status("2026-12-01", "2026-12", caps)
        .await
        .unwrap();
    assert_eq!((day.spent_usd, day.reserved_usd), (0.5, 0.0));
}

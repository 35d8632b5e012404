//! The platform-neutral outbox dispatcher, with a recording platform: order
//! per chat, pacing, retry-after, retries without end, fairness across
//! chats, recovery from panics and database errors, and split messages
//! that survive a crash (through the fake Bot API).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use soloist::adapters::telegram::{Redactor, TEXT_LIMIT, TelegramOutbox, split_text};
use soloist::domain::{ApprovalId, ApprovalRole, ChatRef, Outbound, Platform};
use soloist::outbox::{Deliver, DeliveryError, Dispatcher, Progress, RateLimits, RetryPolicy};
use soloist::store::{OutboxMessage, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Db, TestDb};
use crate::on_both_backends;

on_both_backends!(
    each_chat_gets_its_messages_in_order_and_once,
    retry_after_holds_the_chat_back_and_loses_nothing,
    a_permanent_refusal_fails_the_row_and_the_chat_moves_on,
    a_refused_approval_offer_is_shown_by_the_doctor,
    an_approval_offer_outlasts_more_than_eight_transient_failures_and_is_delivered,
    a_message_failing_for_long_is_reported_once_and_counted_for_the_doctor,
    a_chat_with_thousands_pending_does_not_delay_another_chats_single_message,
    a_delivery_that_panics_once_frees_its_chat_and_the_next_message_goes,
    a_database_error_does_not_stop_the_dispatcher,
    a_crash_after_part_one_of_three_sends_only_parts_two_and_three,
    deliveries_settled_together_mark_only_rows_still_held_and_pace_each_chat,
);

/// What the recording platform does with a message the next time it
/// comes.
enum Act {
    Fail(DeliveryError),
    Panic,
}

/// A platform that records what it was given and answers from a script.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, String, Instant)>>,
    script: Mutex<Vec<(String, Act)>>,
    /// Each delivery takes this long (a real platform's round trip).
    latency: Duration,
}

impl Recorder {
    fn with_latency(latency: Duration) -> Self {
        Recorder {
            latency,
            ..Recorder::default()
        }
    }

    fn script(&self, text: &str, act: Act) {
        self.script.lock().unwrap().push((text.into(), act));
    }

    fn fail(&self, text: &str, error: DeliveryError) {
        self.script(text, Act::Fail(error));
    }

    fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Deliver for Recorder {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    async fn deliver(
        &self,
        message: &OutboxMessage,
        _offers: &[String],
        _progress: &Progress,
    ) -> Result<Option<String>, DeliveryError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let scripted = {
            let mut script = self.script.lock().unwrap();
            let position = script
                .iter()
                .position(|(text, _)| *text == message.message.text);
            position.map(|i| script.remove(i).1)
        };
        match scripted {
            Some(Act::Fail(error)) => return Err(error),
            Some(Act::Panic) => panic!("a bug in the platform adapter"),
            None => {}
        }
        self.sent.lock().unwrap().push((
            message.chat.chat_id.clone(),
            message.message.text.clone(),
            Instant::now(),
        ));
        Ok(Some(format!("m{}", message.id)))
    }
}

const FAST: RateLimits = RateLimits {
    per_chat_interval: Duration::from_millis(30),
    global_per_second: 1000,
    group_per_minute: 1000,
};

/// Retries in milliseconds, so a long outage fits in a test.
const QUICK_RETRY: RetryPolicy = RetryPolicy {
    first: Duration::from_millis(5),
    max: Duration::from_millis(20),
    report_after: Duration::from_millis(60),
};

async fn queue(store: &Store, chat: &str, texts: &[&str]) {
    for text in texts {
        store
            .enqueue(
                &ChatRef::new(Platform::Telegram, chat),
                &Outbound::text(*text),
            )
            .await
            .unwrap();
    }
}

/// A running dispatcher, stopped by `stop`.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start<D: Deliver>(dispatcher: Dispatcher<D>) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dispatcher.run(Duration::from_millis(20), shutdown.clone()));
        Running { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

async fn pending(store: &Store) -> usize {
    store
        .pending_outbox(Platform::Telegram, 1)
        .await
        .unwrap()
        .len()
}

/// Waits until the outbox holds nothing pending (panics after `secs`).
async fn drained(store: &Store, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while pending(store).await > 0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the dispatcher until the outbox is empty (or 10 s pass).
async fn deliver_all(store: &Store, recorder: Arc<Recorder>) {
    let dispatcher = Dispatcher::new(store.clone(), recorder, FAST).with_retry(QUICK_RETRY);
    let running = Running::start(dispatcher);
    drained(store, 10).await;
    running.stop().await;
}

async fn scalar(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn each_chat_gets_its_messages_in_order_and_once(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "a", &["a1", "a2", "a3"]).await;
    queue(&store, "b", &["b1", "b2"]).await;
    queue(&store, "a", &["a4"]).await;
    let recorder = Arc::new(Recorder::default());

    deliver_all(&store, recorder.clone()).await;

    let sent = recorder.sent.lock().unwrap().clone();
    let of = |chat: &str| {
        sent.iter()
            .filter(|(c, _, _)| c == chat)
            .map(|(_, t, _)| t.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("a"), ["a1", "a2", "a3", "a4"]);
    assert_eq!(of("b"), ["b1", "b2"]);
    let a_times: Vec<Instant> = sent
        .iter()
        .filter(|(c, _, _)| c == "a")
        .map(|(_, _, t)| *t)
        .collect();
    for pair in a_times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(29),
            "per-chat pacing"
        );
    }
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM outbox WHERE status = 'delivered' AND claim_token IS NULL"
        )
        .await,
        6,
        "each row marked delivered, its claim gone"
    );
}

async fn retry_after_holds_the_chat_back_and_loses_nothing(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "a", &["first", "second"]).await;
    let recorder = Arc::new(Recorder::default());
    recorder.fail(
        "first",
        DeliveryError::RetryAfter(Duration::from_millis(300)),
    );
    let started = Instant::now();

    deliver_all(&store, recorder.clone()).await;

    let sent = recorder.sent.lock().unwrap().clone();
    let texts: Vec<_> = sent.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(texts, ["first", "second"]);
    assert!(
        sent[0].2 - started >= Duration::from_millis(300),
        "waited as told"
    );
}

async fn a_permanent_refusal_fails_the_row_and_the_chat_moves_on(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "a", &["refused", "next"]).await;
    let recorder = Arc::new(Recorder::default());
    recorder.fail("refused", DeliveryError::Permanent("chat not found".into()));
    recorder.fail("next", DeliveryError::Transient("connection reset".into()));

    deliver_all(&store, recorder.clone()).await;

    assert_eq!(
        recorder.texts(),
        ["next"],
        "the transient failure was retried"
    );
    let failed = scalar(&store, "SELECT COUNT(*) FROM outbox WHERE status = 'failed' AND last_error LIKE '%chat not found%'").await;
    assert_eq!(failed, 1);
}

async fn a_refused_approval_offer_is_shown_by_the_doctor(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    let offer = Outbound::text("Approve?").linked_to(ApprovalId::new(), ApprovalRole::Offer);
    store
        .enqueue(&ChatRef::new(Platform::Telegram, "gone"), &offer)
        .await
        .unwrap();
    assert_eq!(soloist::outbox::trouble(&store).await.unwrap(), None);
    let recorder = Arc::new(Recorder::default());
    recorder.fail(
        "Approve?",
        DeliveryError::Permanent("chat not found".into()),
    );

    deliver_all(&store, recorder).await;

    let said = soloist::outbox::trouble(&store).await.unwrap().unwrap();
    assert!(said.contains("1 approval offer(s)"), "{said}");
}

/// Item 3: the old dispatcher gave up after 8 attempts (about 32 s).
async fn an_approval_offer_outlasts_more_than_eight_transient_failures_and_is_delivered(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    let offer =
        Outbound::text("Approve this draft?").linked_to(ApprovalId::new(), ApprovalRole::Offer);
    store
        .enqueue(&ChatRef::new(Platform::Telegram, "owner"), &offer)
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    for _ in 0..12 {
        recorder.fail(
            "Approve this draft?",
            DeliveryError::Transient("connection refused".into()),
        );
    }

    deliver_all(&store, recorder.clone()).await;

    assert_eq!(recorder.texts(), ["Approve this draft?"]);
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM outbox WHERE status = 'delivered' AND attempts = 12"
        )
        .await,
        1,
        "twelve failed attempts, then delivered"
    );
}

async fn a_message_failing_for_long_is_reported_once_and_counted_for_the_doctor(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "owner", &["decision"]).await;
    let recorder = Arc::new(Recorder::default());
    for _ in 0..10_000 {
        recorder.fail("decision", DeliveryError::Transient("HTTP 502".into()));
    }
    let dispatcher = Dispatcher::new(store.clone(), recorder.clone(), FAST).with_retry(QUICK_RETRY);
    let running = Running::start(dispatcher);

    tokio::time::sleep(Duration::from_millis(600)).await;
    running.stop().await;

    assert_eq!(pending(&store).await, 1, "never given up");
    let reported = scalar(
        &store,
        "SELECT COUNT(*) FROM outbox WHERE reported_at IS NOT NULL",
    )
    .await;
    assert_eq!(reported, 1);
    let trouble = store
        .outbox_trouble(soloist::store::now_ms() - 60, 0)
        .await
        .unwrap();
    assert_eq!(trouble.failing, 1, "soloist doctor sees it");
    assert!(
        scalar(&store, "SELECT MAX(attempts) FROM outbox").await > 8,
        "still retrying past the old limit"
    );
}

/// Item 4: the old dispatcher read only the 1,000 oldest pending rows.
async fn a_chat_with_thousands_pending_does_not_delay_another_chats_single_message(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    let payload = serde_json::to_string(&Outbound::text("noise")).unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    for _ in 0..3000 {
        sqlx::query(
            "INSERT INTO outbox (platform, chat_id, payload, status, created_at)
             VALUES ('telegram', 'noisy', $1, 'pending', 0)",
        )
        .bind(&payload)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    queue(&store, "owner", &["your draft is ready"]).await;
    let recorder = Arc::new(Recorder::with_latency(Duration::from_millis(2)));
    let started = Instant::now();
    let running = Running::start(Dispatcher::new(store.clone(), recorder.clone(), FAST));

    let deadline = started + Duration::from_secs(5);
    let owner_at = loop {
        let found = recorder
            .sent
            .lock()
            .unwrap()
            .iter()
            .find(|(chat, _, _)| chat == "owner")
            .map(|(_, _, at)| *at);
        if let Some(at) = found {
            break at;
        }
        assert!(Instant::now() < deadline, "the owner's message never went");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    running.stop().await;

    assert!(
        owner_at - started < Duration::from_millis(1500),
        "the owner waited {:?}",
        owner_at - started
    );
    let noisy_before = recorder
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(chat, _, at)| chat == "noisy" && *at < owner_at)
        .count();
    assert!(
        noisy_before <= 2,
        "{noisy_before} noisy messages went first"
    );
}

/// Item 5: a panicking delivery used to leave its chat in flight for good.
async fn a_delivery_that_panics_once_frees_its_chat_and_the_next_message_goes(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "a", &["boom", "after"]).await;
    let recorder = Arc::new(Recorder::default());
    recorder.script("boom", Act::Panic);

    deliver_all(&store, recorder.clone()).await;

    assert_eq!(
        recorder.texts(),
        ["boom", "after"],
        "retried, then the next"
    );
}

/// Item 5: a database error used to end the dispatcher (and the process).
async fn a_database_error_does_not_stop_the_dispatcher(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "a", &["sent once the database is back"]).await;
    sqlx::query("ALTER TABLE outbox RENAME TO outbox_away")
        .execute(store.pool())
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let running = Running::start(Dispatcher::new(store.clone(), recorder.clone(), FAST));

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!running.task.is_finished(), "the dispatcher kept running");
    sqlx::query("ALTER TABLE outbox_away RENAME TO outbox")
        .execute(store.pool())
        .await
        .unwrap();
    drained(&store, 10).await;
    running.stop().await;

    assert_eq!(recorder.texts(), ["sent once the database is back"]);
}

/// Item 7: parts already sent were remembered only in memory.
async fn a_crash_after_part_one_of_three_sends_only_parts_two_and_three(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    let tg = FakeTelegram::start().await;
    let paragraphs: Vec<String> = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|word| format!("{word} ").repeat(400).trim_end().to_string())
        .collect();
    let text = paragraphs.join("\n\n");
    assert_eq!(
        split_text(&text, TEXT_LIMIT).unwrap().len(),
        3,
        "three parts"
    );
    store
        .enqueue(
            &ChatRef::new(Platform::Telegram, "4242"),
            &Outbound::text(text),
        )
        .await
        .unwrap();
    let outbox = |part_gap: Duration| {
        let bot = teloxide::Bot::new(&tg.token).set_api_url(url::Url::parse(&tg.api_url).unwrap());
        Arc::new(TelegramOutbox::new(
            bot,
            store.clone(),
            Redactor::new(&tg.token),
            part_gap,
        ))
    };
    // The first process sends part 1, then dies in the pause before part 2.
    let first = Dispatcher::new(
        store.clone(),
        outbox(Duration::from_secs(2)),
        RateLimits::unlimited(),
    )
    .with_lease(Duration::from_millis(300));
    let crashed = tokio::spawn(first.run(Duration::from_millis(20), CancellationToken::new()));
    tg.wait_for(10, "part 1", |s| (!s.sent.is_empty()).then_some(()))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    crashed.abort();
    let _ = crashed.await;

    let second = Dispatcher::new(
        store.clone(),
        outbox(Duration::ZERO),
        RateLimits::unlimited(),
    )
    .with_lease(Duration::from_millis(300));
    let running = Running::start(second);
    drained(&store, 10).await;
    running.stop().await;

    let sent: Vec<String> = tg.inspect(|s| s.sent.iter().filter_map(|m| m.text.clone()).collect());
    assert_eq!(sent, paragraphs, "each part once, in order");
}

/// Issue 9's shape: two dispatchers on one PostgreSQL never send a row
/// twice, and each chat's order holds across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_one_database_send_each_row_once_in_order() {
    let test_db = TestDb::create(Db::Postgres).await;
    let store = Store::open(&test_db.url, 8).await.unwrap();
    for n in 0..20 {
        for chat in ["a", "b", "c"] {
            queue(&store, chat, &[&format!("{chat}{n:02}")]).await;
        }
    }
    let recorder = Arc::new(Recorder::with_latency(Duration::from_millis(3)));
    let one = Running::start(Dispatcher::new(
        store.clone(),
        recorder.clone(),
        RateLimits::unlimited(),
    ));
    let two = Running::start(Dispatcher::new(
        store.clone(),
        recorder.clone(),
        RateLimits::unlimited(),
    ));

    drained(&store, 20).await;
    one.stop().await;
    two.stop().await;

    let texts = recorder.texts();
    assert_eq!(texts.len(), 60, "each row once");
    for chat in ["a", "b", "c"] {
        let of_chat: Vec<&String> = texts.iter().filter(|t| t.starts_with(chat)).collect();
        let mut sorted = of_chat.clone();
        sorted.sort();
        assert_eq!(of_chat, sorted, "chat {chat} in order");
    }
}

/// Eight claimers racing on one PostgreSQL, each claiming chat heads and
/// marking them delivered at once: no row is ever claimed twice. A claim
/// reads the chats' heads in its statement's snapshot and locks them
/// after; a head another claimer took, sent and marked delivered in
/// between must be passed over when its lock is taken (the row is no
/// longer pending), not claimed and sent again. Ballast (chats whose head
/// is held under a long lease, with many rows behind it) makes each scan
/// slow, so that window is wide, as under a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_racing_on_one_postgres_never_claim_a_row_another_already_delivered() {
    use soloist::store::{Claim, Settlement};
    use std::collections::HashMap;

    const CHATS: usize = 40;
    const PER_CHAT: usize = 50;
    let test_db = TestDb::create(Db::Postgres).await;
    let store = Store::open(&test_db.url, 10).await.unwrap();
    queue(&store, "template", &["a message"]).await;
    let copy = |chats: &str, rows: usize| {
        format!(
            "INSERT INTO outbox (platform, chat_id, payload, status, created_at, next_attempt_at)
             SELECT o.platform, {chats}, o.payload, 'pending', o.created_at, 0
             FROM outbox o, generate_series(0, {}) g WHERE o.chat_id = 'template'",
            rows - 1
        )
    };
    for sql in [
        copy(&format!("'chat' || (g % {CHATS})"), CHATS * PER_CHAT),
        copy("'ballast' || (g % 200)", 30_000),
        "UPDATE outbox SET claimed_by = 'asleep', claim_token = 'asleep', claimed_until = 9000000000000
         WHERE id IN (SELECT MIN(id) FROM outbox WHERE chat_id LIKE 'ballast%' GROUP BY chat_id)"
            .to_string(),
        "UPDATE outbox SET status = 'delivered' WHERE chat_id = 'template'".to_string(),
        "ANALYZE outbox".to_string(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let racing_left = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND chat_id LIKE 'chat%'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };

    let claimed: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let claimers: Vec<_> = (0..8)
        .map(|claimer| {
            let (store, claimed) = (store.clone(), claimed.clone());
            tokio::spawn(async move {
                let chats: Vec<String> = (0..CHATS).map(|c| format!("chat{c}")).collect();
                let deadline = Instant::now() + Duration::from_secs(60);
                for round in 0.. {
                    assert!(Instant::now() < deadline, "not drained in 60 s");
                    let claim = Claim {
                        owner: format!("claimer-{claimer}"),
                        token: format!("claimer-{claimer}-{round}"),
                    };
                    let lease = Duration::from_secs(30);
                    // Both claim paths: the scan and the one a wake names.
                    let named: Vec<String> = (0..4)
                        .map(|k| chats[(claimer * 5 + round + k * 10) % CHATS].clone())
                        .collect();
                    let rows = if round % 2 == 0 {
                        store
                            .claim_outbox(Platform::Telegram, &claim, lease, 8)
                            .await
                            .unwrap()
                    } else {
                        store
                            .claim_outbox_chats(Platform::Telegram, &claim, lease, &named)
                            .await
                            .unwrap()
                    };
                    let settlements: Vec<(String, Settlement)> = rows
                        .iter()
                        .filter(|row| row.chat.chat_id.starts_with("chat"))
                        .map(|row| {
                            *claimed.lock().unwrap().entry(row.id).or_default() += 1;
                            (
                                claim.token.clone(),
                                Settlement::Delivered {
                                    id: row.id,
                                    chat: row.chat.clone(),
                                    platform_message_id: None,
                                    chat_pace_until: None,
                                },
                            )
                        })
                        .collect();
                    if settlements.is_empty() {
                        let left: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND chat_id LIKE 'chat%'",
                        )
                        .fetch_one(store.pool())
                        .await
                        .unwrap();
                        if left == 0 {
                            return;
                        }
                    }
                    store.settle_outbox(&settlements).await.unwrap();
                }
            })
        })
        .collect();
    for claimer in claimers {
        claimer.await.unwrap();
    }

    assert_eq!(racing_left().await, 0);
    let claimed = claimed.lock().unwrap();
    let twice: Vec<(&i64, &usize)> = claimed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} rows claimed more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(claimed.len(), CHATS * PER_CHAT, "every row claimed");
}

/// Delivered rows are settled by one statement: each row is marked only
/// while its claim is still the settling token's (a row whose lease lapsed
/// and was claimed again is reported lost and left to its new holder),
/// keeps the platform's message id when one came, and holds its chat's
/// next row back when the chat is paced.
async fn deliveries_settled_together_mark_only_rows_still_held_and_pace_each_chat(db: Db) {
    use soloist::store::{Claim, Settlement};

    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    for chat in ["a", "b", "c"] {
        queue(&store, chat, &["first", "second"]).await;
    }
    let claim = |token: &str| Claim {
        owner: format!("owner-{token}"),
        token: token.to_string(),
    };
    let old = claim("old");
    let heads = store
        .claim_outbox(Platform::Telegram, &old, Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(heads.len(), 3, "one head a chat");
    let head = |chat: &str| heads.iter().find(|m| m.chat.chat_id == chat).unwrap();
    // The old claim's lease (zero) has lapsed: chat c's head is taken again.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = claim("new");
    let retaken = store
        .claim_outbox_chats(
            Platform::Telegram,
            &new,
            Duration::from_secs(60),
            &["c".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(
        retaken.iter().map(|m| m.id).collect::<Vec<_>>(),
        [head("c").id]
    );

    let paced_until = soloist::store::now_ms() + 3_600_000;
    let delivered = |chat: &str, mid: Option<&str>, pace: Option<i64>| {
        (
            old.token.clone(),
            Settlement::Delivered {
                id: head(chat).id,
                chat: head(chat).chat.clone(),
                platform_message_id: mid.map(String::from),
                chat_pace_until: pace,
            },
        )
    };
    let lost = store
        .settle_outbox(&[
            delivered("a", Some("m-a"), Some(paced_until)),
            delivered("b", None, None),
            delivered("c", Some("m-c"), None),
        ])
        .await
        .unwrap();
    assert_eq!(lost, [head("c").id], "only the row claimed again is lost");

    let row = |id: i64| {
        let store = store.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<String>, Option<i64>)>(
                "SELECT status, platform_message_id, claim_token, delivered_at FROM outbox WHERE id = $1",
            )
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap()
        }
    };
    let (status, mid, token, delivered_at) = row(head("a").id).await;
    assert_eq!(
        (status.as_str(), mid.as_deref(), token),
        ("delivered", Some("m-a"), None)
    );
    assert!(delivered_at.is_some());
    let (status, mid, _, _) = row(head("b").id).await;
    assert_eq!((status.as_str(), mid), ("delivered", None));
    let (status, mid, token, _) = row(head("c").id).await;
    assert_eq!(
        (status.as_str(), mid, token.as_deref()),
        ("pending", None, Some("new")),
        "the new holder's row is untouched"
    );

    // Chat a's next row waits for its pace; chat b's may go now.
    let next_at = |chat: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT next_attempt_at FROM outbox WHERE chat_id = $1 AND status = 'pending'",
            )
            .bind(chat)
            .fetch_one(store.pool())
            .await
            .unwrap()
        }
    };
    assert_eq!(next_at("a").await, paced_until);
    assert!(next_at("b").await < paced_until);
}

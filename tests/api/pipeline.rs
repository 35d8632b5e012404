//! The pipeline under a burst: `soloist run`'s Telegram service against the
//! fake Bot API and the fake model over real HTTP, on both databases. No
//! step is paid twice, a read-only command costs one commit, replies leave
//! as they are ready, and the outbox is woken with what it must send.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use soloist::domain::{ChatRef, Outbound, Platform};
use soloist::outbox::{Deliver, DeliveryError, Dispatcher, Progress, RateLimits};
use soloist::store::{OutboxMessage, Store};

use soloist::app::App;
use soloist::config::{Secret, Settings};
use soloist::runtime::platform_services;
use tokio_util::sync::CancellationToken;

use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Db, TestApp};
use crate::on_both_backends;

on_both_backends!(
    n_drafts_at_once_make_exactly_n_generation_calls,
    a_paid_step_whose_commit_fails_for_a_moment_is_committed_not_paid_again,
    a_first_reply_leaves_while_later_updates_of_the_burst_are_still_waiting,
);

// PostgreSQL only: transactions are counted by their ids, and NOTIFY is
// PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_help_costs_one_commit_of_its_own_and_its_inbound_shares_the_raw_updates() {
    help_costs_one_commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sends_a_row_another_process_queued_without_waiting_for_a_poll() {
    outbox_hears_another_process().await
}

const FIRST_CHAT: i64 = 50_000;

/// A soloist running its Telegram service for `chats` chats, rate limits
/// lifted.
struct Burst {
    test: TestApp,
    tg: FakeTelegram,
    shutdown: CancellationToken,
}

impl Burst {
    async fn start(db: Db, chats: i64, adjust: impl FnOnce(&mut Settings)) -> Burst {
        let tg = FakeTelegram::start().await;
        let fake = tg.clone();
        let test = TestApp::spawn_with(db, move |s| {
            s.telegram.token = Secret::new(fake.token.clone());
            s.telegram.api_url = fake.api_url.clone();
            s.telegram.allowed_user_ids = (FIRST_CHAT..FIRST_CHAT + chats)
                .map(|id| id.to_string())
                .collect();
            s.telegram.poll_timeout_secs = 1;
            s.telegram.rate_limits = false;
            adjust(s);
        })
        .await;
        let shutdown = CancellationToken::new();
        run(&test.app, &shutdown);
        tg.wait_for(10, "the first poll", |s| {
            (!s.offsets.is_empty()).then_some(())
        })
        .await;
        Burst { test, tg, shutdown }
    }

    /// Waits until every chat in `chats` got a message offering `label`.
    async fn offers_in(&self, chats: std::ops::Range<i64>, label: &str, secs: u64) {
        let wanted = chats.clone().count();
        self.tg
            .wait_for(secs, "an offer in every chat", |s| {
                let offered: std::collections::HashSet<i64> = s
                    .sent
                    .iter()
                    .filter(|m| chats.contains(&m.chat_id) && m.button(label).is_some())
                    .map(|m| m.chat_id)
                    .collect();
                (offered.len() == wanted).then_some(())
            })
            .await;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn run(app: &App, shutdown: &CancellationToken) {
    let services = platform_services(app, shutdown);
    tokio::spawn(soloist::runtime::run(
        app.clone(),
        services,
        shutdown.clone(),
    ));
}

/// Generation calls the fake model answered (chat completions and
/// messages; batch calls are not generation).
fn generation_calls(test: &TestApp) -> usize {
    test.llm.calls()
}

async fn n_drafts_at_once_make_exactly_n_generation_calls(db: Db) {
    const N: i64 = 150;
    let burst = Burst::start(db, N, |_| {}).await;

    for chat in FIRST_CHAT..FIRST_CHAT + N {
        burst.tg.user_says(chat, "/draft a post about the audit");
    }
    burst
        .offers_in(FIRST_CHAT..FIRST_CHAT + N, "Approve", 60)
        .await;
    // Anything still running (a second driver of one step) has time to
    // reach the model.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(generation_calls(&burst.test), N as usize);
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(burst.test.app.store.pool())
        .await
        .unwrap();
    assert_eq!(runs, N);
}

/// Makes the journal refuse the generate step's output (it holds the fake
/// model's draft) until [`accept_drafts`].
async fn refuse_drafts(store: &soloist::store::Store, db: Db) {
    let statements = match db {
        Db::Sqlite => vec![
            "CREATE TRIGGER refuse_draft BEFORE INSERT ON journal
             WHEN NEW.payload LIKE '%Website Audit price%'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
        Db::Postgres => vec![
            "CREATE FUNCTION refuse_draft() RETURNS trigger AS $$ BEGIN
               IF NEW.payload LIKE '%Website Audit price%' THEN RAISE EXCEPTION 'refused by the test'; END IF;
               RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_draft BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION refuse_draft()",
        ],
    };
    for statement in statements {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
}

async fn accept_drafts(store: &soloist::store::Store, db: Db) {
    let statement = match db {
        Db::Sqlite => "DROP TRIGGER refuse_draft",
        Db::Postgres => "DROP TRIGGER refuse_draft ON journal",
    };
    sqlx::query(statement).execute(store.pool()).await.unwrap();
}

async fn a_paid_step_whose_commit_fails_for_a_moment_is_committed_not_paid_again(db: Db) {
    // A short lease, so a run left behind by a failed commit is taken over
    // (and its step executed again) within the test.
    let burst = Burst::start(db, 1, |s| {
        s.engine.lease_secs = 1.0;
        s.engine.heartbeat_secs = 0.3;
    })
    .await;
    let store = burst.test.app.store.clone();
    refuse_drafts(&store, db).await;

    burst
        .tg
        .user_says(FIRST_CHAT, "/draft a post about the audit");
    let llm = burst.test.llm.clone();
    burst
        .tg
        .wait_for(10, "the model call", |_| (llm.calls() >= 1).then_some(()))
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    accept_drafts(&store, db).await;
    burst
        .offers_in(FIRST_CHAT..FIRST_CHAT + 1, "Approve", 20)
        .await;
    // Past the lease and the worker's next look for runs left behind.
    tokio::time::sleep(Duration::from_secs(6)).await;

    assert_eq!(generation_calls(&burst.test), 1);
    let offers = burst.tg.inspect(|s| {
        s.sent_to(FIRST_CHAT)
            .iter()
            .filter(|m| m.button("Approve").is_some())
            .count()
    });
    assert_eq!(offers, 1);
}

async fn a_first_reply_leaves_while_later_updates_of_the_burst_are_still_waiting(db: Db) {
    const N: i64 = 200;
    let burst = Burst::start(db, N, |_| {}).await;
    burst.test.llm.always(crate::fake_llm::Behavior::Delayed(
        Duration::from_millis(20),
        Box::new(crate::fake_llm::Behavior::reply(
            crate::fake_llm::DEFAULT_DRAFT,
        )),
    ));

    for chat in FIRST_CHAT..FIRST_CHAT + N {
        burst.tg.user_says(chat, "/draft a post about the audit");
    }
    burst
        .tg
        .wait_for(30, "the first reply", |s| {
            (!s.sent.is_empty()).then_some(())
        })
        .await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM platform_updates WHERE handled_at IS NULL AND failed_at IS NULL",
    )
    .fetch_one(burst.test.app.store.pool())
    .await
    .unwrap();
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM platform_updates")
        .fetch_one(burst.test.app.store.pool())
        .await
        .unwrap();

    // Updates not recorded yet are waiting too (the poller is held back).
    let still_waiting = waiting + (N - recorded);
    assert!(
        still_waiting > N / 2,
        "the first reply left when only {still_waiting} of {N} updates were still waiting"
    );
    burst
        .offers_in(FIRST_CHAT..FIRST_CHAT + N, "Approve", 60)
        .await;
}

/// Records, for every write to the tables a /help touches, the id of the
/// transaction that made it.
async fn count_transactions(store: &Store) {
    let statements = [
        "CREATE TABLE seen_writes (txid BIGINT, tbl TEXT, op TEXT)",
        "CREATE FUNCTION note_write() RETURNS trigger AS $$ BEGIN
           INSERT INTO seen_writes VALUES (txid_current(), TG_TABLE_NAME, TG_OP); RETURN NULL; END
         $$ LANGUAGE plpgsql",
    ];
    for statement in statements {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    for table in ["platform_updates", "inbound_updates", "messages"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER note_{table} AFTER INSERT OR UPDATE ON {table}
             FOR EACH ROW EXECUTE FUNCTION note_write()"
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
    // The outbox row's insert only: its claim and delivered mark are the
    // outbox's own (grouped) commits.
    sqlx::query(
        "CREATE TRIGGER note_outbox AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION note_write()",
    )
    .execute(store.pool())
    .await
    .unwrap();
}

async fn help_costs_one_commit() {
    let burst = Burst::start(Db::Postgres, 1, |_| {}).await;
    let store = burst.test.app.store.clone();
    count_transactions(&store).await;

    burst.tg.user_says(FIRST_CHAT, "/help");
    burst
        .tg
        .wait_for(10, "the reply", |s| (!s.sent.is_empty()).then_some(()))
        .await;
    // The grouped "handled" mark follows the reply.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let writes: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT txid, tbl, op FROM seen_writes")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let txid = |table: &str, op: &str| {
        writes
            .iter()
            .filter(|(_, t, o)| t == table && o == op)
            .map(|(id, _, _)| *id)
            .collect::<Vec<_>>()
    };
    let raw = txid("platform_updates", "INSERT");
    assert_eq!(raw.len(), 1, "{writes:?}");
    assert_eq!(txid("inbound_updates", "INSERT"), raw, "{writes:?}");
    let answer = txid("outbox", "INSERT");
    assert_eq!(answer.len(), 1, "{writes:?}");
    assert_eq!(txid("inbound_updates", "UPDATE"), answer, "{writes:?}");
    let distinct: std::collections::BTreeSet<i64> = writes.iter().map(|w| w.0).collect();
    // The raw update with its inbound, the answer, the handled mark.
    assert_eq!(distinct.len(), 3, "{writes:?}");
}

/// A platform that records the texts it was given.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<String>>,
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
        self.sent.lock().unwrap().push(message.message.text.clone());
        Ok(None)
    }
}

async fn outbox_hears_another_process() {
    let db = crate::helpers::TestDb::create(Db::Postgres).await;
    let ours = Store::open(&db.url, 4).await.unwrap();
    let theirs = Store::open(&db.url, 1).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    // A poll far longer than the test: only a wake can deliver in time.
    let dispatcher = Dispatcher::new(ours.clone(), recorder.clone(), RateLimits::unlimited());
    tokio::spawn(dispatcher.run(Duration::from_secs(600), shutdown.clone()));
    // The dispatcher's first read of the outbox is done and it listens.
    tokio::time::sleep(Duration::from_millis(500)).await;

    theirs
        .enqueue(
            &ChatRef::new(Platform::Telegram, "42"),
            &Outbound::text("from the other process"),
        )
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while recorder.sent.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the row was not sent without a poll"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*recorder.sent.lock().unwrap(), ["from the other process"]);
    shutdown.cancel();
}

//! The platform-neutral outbox dispatcher, with a recording platform: order
//! per chat, pacing, retry-after, retries and refusals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use soloist::domain::{ChatRef, Outbound, Platform};
use soloist::outbox::{Deliver, DeliveryError, Dispatcher, RateLimits};
use soloist::store::{OutboxMessage, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Db, TestDb};
use crate::on_both_backends;

on_both_backends!(
    each_chat_gets_its_messages_in_order_and_once,
    retry_after_holds_the_chat_back_and_loses_nothing,
    a_permanent_refusal_fails_the_row_and_the_chat_moves_on,
);

/// A platform that records what it was given and answers from a script.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, String, Instant)>>,
    script: Mutex<Vec<(String, DeliveryError)>>,
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
    ) -> Result<Option<String>, DeliveryError> {
        let scripted = {
            let mut script = self.script.lock().unwrap();
            let position = script
                .iter()
                .position(|(text, _)| *text == message.message.text);
            position.map(|i| script.remove(i).1)
        };
        if let Some(error) = scripted {
            return Err(error);
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
    max_attempts: 3,
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

/// Runs the dispatcher until the outbox is empty (or 10 s pass).
async fn deliver_all(store: &Store, recorder: Arc<Recorder>) {
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::new(store.clone(), recorder, FAST);
    let running = tokio::spawn(dispatcher.run(Duration::from_millis(20), shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store
        .pending_outbox(Platform::Telegram, 1)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
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
}

async fn retry_after_holds_the_chat_back_and_loses_nothing(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    queue(&store, "a", &["first", "second"]).await;
    let recorder = Arc::new(Recorder::default());
    recorder.script.lock().unwrap().push((
        "first".into(),
        DeliveryError::RetryAfter(Duration::from_millis(300)),
    ));
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
    recorder.script.lock().unwrap().push((
        "refused".into(),
        DeliveryError::Permanent("chat not found".into()),
    ));
    recorder.script.lock().unwrap().push((
        "next".into(),
        DeliveryError::Transient("connection reset".into()),
    ));

    deliver_all(&store, recorder.clone()).await;

    let texts: Vec<_> = recorder
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t, _)| t.clone())
        .collect();
    assert_eq!(texts, ["next"], "the transient failure was retried");
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'failed' AND last_error LIKE '%chat not found%'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(failed, 1);
}

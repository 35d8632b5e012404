//! E-mail out: queued in a transaction, delivered by the outbox to a real
//! SMTP conversation with the test sink, once, retried through an outage,
//! and the SMTP password kept out of logs and the database.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use soloist::config::{Secret, Settings};
use soloist::email::{Attachment, EmailMessage, TlsMode};
use tokio_util::sync::CancellationToken;

use crate::fake_smtp::FakeSmtp;
use crate::helpers::{Db, TestApp};
use crate::on_both_backends;

const PASSWORD: &str = "smtp-pass-Zq81xv";
/// Binary, as a PDF is: sent base64-encoded.
const PDF: &[u8] = b"%PDF-1.7 \x00\xff\xfe\x80 proposal";

pub fn point_email_at(settings: &mut Settings, smtp: &FakeSmtp) {
    settings.email.host = "127.0.0.1".into();
    settings.email.port = smtp.port;
    settings.email.tls = TlsMode::None;
    settings.email.user = "maya".into();
    settings.email.password = Secret::new(PASSWORD);
    settings.email.from = "Maya <maya@harborandpine.example>".into();
    settings.email.per_second = 50;
}

/// Starts delivering the app's e-mail; cancel the token to stop.
pub fn start_email(app: &TestApp) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let outbox = soloist::email::start(
        app.app.store.clone(),
        &app.app.settings.email,
        shutdown.clone(),
    )
    .expect("e-mail settings are valid")
    .expect("e-mail is configured");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        outbox.stopped().await;
    });
    shutdown
}

fn proposal() -> EmailMessage {
    EmailMessage {
        to: "rui.santos@marisqueira.example".into(),
        subject: "Your Brand Sprint proposal".into(),
        text: "Hello Rui,\n\nThe proposal is attached.\n.\nMaya".into(),
        attachments: vec![Attachment {
            filename: "proposal.pdf".into(),
            content_type: "application/pdf".into(),
            bytes: PDF.to_vec(),
        }],
    }
}

async fn a_queued_email_arrives_once_at_the_sink_with_its_attachment(db: Db) {
    let smtp = FakeSmtp::start().await;
    let app = TestApp::spawn_with(db, |s| point_email_at(s, &smtp)).await;
    let store = &app.app.store;

    let first = soloist::email::queue(store, proposal(), "offer-42")
        .await
        .unwrap();
    let again = soloist::email::queue(store, proposal(), "offer-42")
        .await
        .unwrap();
    let shutdown = start_email(&app);
    let received = smtp.wait_for(1, 10).await;
    // Give a second delivery every chance to happen before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shutdown.cancel();

    assert!(first && !again, "the same key queues once");
    let received = smtp.received().await.len().max(received.len());
    assert_eq!(received, 1, "delivered exactly once");
    let message = &smtp.received().await[0];
    assert_eq!(message.from, "maya@harborandpine.example");
    assert_eq!(message.to, ["rui.santos@marisqueira.example"]);
    assert!(
        message.data.contains("Subject: Your Brand Sprint proposal"),
        "{}",
        message.data
    );
    assert!(
        message.data.contains("filename=\"proposal.pdf\""),
        "{}",
        message.data
    );
    assert!(message.data.contains("application/pdf"), "{}", message.data);
    let encoded = base64::engine::general_purpose::STANDARD.encode(PDF);
    assert!(
        message.data.contains(&encoded),
        "the attachment's bytes: {}",
        message.data
    );
    assert!(
        message.data.contains("\r\n.\r\nMaya"),
        "a lone dot in the text survives: {}",
        message.data
    );
    assert_eq!(
        message.auth,
        Some(("maya".to_string(), PASSWORD.to_string())),
        "the client authenticated with the configured credentials"
    );
    let pending = store
        .pending_outbox(soloist::domain::Platform::Email, 10)
        .await
        .unwrap();
    assert!(pending.is_empty(), "the row is marked delivered");
}

async fn an_smtp_outage_is_retried_and_the_email_delivered_later(db: Db) {
    let smtp = FakeSmtp::start().await;
    smtp.set_down(true);
    let app = TestApp::spawn_with(db, |s| point_email_at(s, &smtp)).await;
    soloist::email::queue(&app.app.store, proposal(), "reply-7")
        .await
        .unwrap();

    let shutdown = start_email(&app);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while smtp.refused() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never tried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(smtp.received().await.is_empty());
    smtp.set_down(false);
    let received = smtp.wait_for(1, 15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();

    assert_eq!(received.len(), 1);
    assert_eq!(
        smtp.received().await.len(),
        1,
        "delivered once after the outage"
    );
}

on_both_backends!(
    a_queued_email_arrives_once_at_the_sink_with_its_attachment,
    an_smtp_outage_is_retried_and_the_email_delivered_later,
);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A current-thread runtime runs every task on this thread, so a
/// thread-local subscriber sees the outbox's and lettre's logs too.
#[tokio::test(flavor = "current_thread")]
async fn the_smtp_password_never_reaches_the_logs_or_the_database() {
    let smtp = FakeSmtp::start().await;
    smtp.set_down(true);
    let app = TestApp::spawn_with(Db::Sqlite, |s| point_email_at(s, &smtp)).await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    soloist::email::queue(&app.app.store, proposal(), "reply-9")
        .await
        .unwrap();
    tracing::info!(settings = ?app.app.settings, "settings as a log shows them");
    let shutdown = start_email(&app);
    while smtp.refused() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    smtp.set_down(false);
    smtp.wait_for(1, 15).await;
    shutdown.cancel();

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("delivery failed"),
        "the outage was logged: {logs}"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the password leaked into the logs"
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("\0maya\0{PASSWORD}"));
    assert!(
        !logs.contains(&encoded),
        "the AUTH line leaked into the logs"
    );
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT payload, last_error FROM outbox WHERE platform = 'email'")
            .fetch_all(app.app.store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    for (payload, error) in rows {
        assert!(!payload.contains(PASSWORD));
        assert!(
            error.is_some_and(|e| !e.contains(PASSWORD)),
            "the outage is recorded without the password"
        );
    }
    assert!(
        smtp.transcript().await.iter().any(|l| l.contains(&encoded)),
        "the password was used on the wire, so its absence above means something"
    );
}

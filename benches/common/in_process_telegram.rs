//! Set-up shared by the benches that drive `soloist run`'s Telegram service
//! in process against the fake Bot API (`burst`, `telegram`). Each bench
//! includes the fakes and the test helpers as modules of its own, so this
//! module reaches them through `crate::`.

use std::ops::Range;

use soloist::config::{Secret, Settings};
use soloist::runtime::platform_services;
use tokio_util::sync::CancellationToken;

use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Db, TestApp};

/// A soloist on `db` whose Telegram service polls a fresh fake, with
/// `chats` allowed and the outbox's rate limits as given; `tweak` changes
/// any other setting. Returns once the first long poll is waiting.
pub async fn soloist_on_fake_telegram(
    db: Db,
    chats: Range<i64>,
    rate_limits: bool,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, FakeTelegram, CancellationToken) {
    let tg = FakeTelegram::start().await;
    let fake = tg.clone();
    let test = TestApp::spawn_with(db, move |s: &mut Settings| {
        s.telegram.token = Secret::new(fake.token.clone());
        s.telegram.api_url = fake.api_url.clone();
        s.telegram.allowed_user_ids = chats.map(|id| id.to_string()).collect();
        s.telegram.rate_limits = rate_limits;
        s.telegram.poll_timeout_secs = 10;
        tweak(s);
    })
    .await;
    let shutdown = CancellationToken::new();
    let services = platform_services(&test.app, &shutdown);
    tokio::spawn(soloist::runtime::run(
        test.app.clone(),
        services,
        shutdown.clone(),
    ));
    tg.wait_for(10, "the first poll", |s| {
        (!s.offsets.is_empty()).then_some(())
    })
    .await;
    (test, tg, shutdown)
}

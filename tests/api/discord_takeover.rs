//! Two `soloist run` processes on one PostgreSQL database and one (fake)
//! Discord bot: one holds the gateway session; when it is killed the other
//! takes the gateway over, identifies afresh (serenity cannot resume
//! another process's session), and reads back from channel history the
//! mention sent while nobody held the session: answered once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Process;
use crate::fake_discord::{FakeDiscord, Place, TOKEN, User};
use crate::fake_llm::FakeLlm;
use crate::helpers::{Db, TestDb};

const OWNER: User = User {
    id: "111000000000000001",
    name: "maya.discord",
};
const CHANNEL: &str = "700000000000000002";

/// A config file for `soloist run` against the fake Discord; returns its
/// path.
fn discord_config(home: &Path, discord: &FakeDiscord) -> PathBuf {
    let path = home.join("takeover.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "[owner]\ndiscord_user_id = \"{}\"\n\n\
         [discord]\ntoken = \"{TOKEN}\"\napi_url = \"{}\"\nallowed_channel_ids = [\"{CHANNEL}\"]\nrate_limits = false\n",
        OWNER.id, discord.api_url,
    )
    .unwrap();
    path
}

/// How many of the bot's messages in the channel answer `/NAME` (an
/// unknown command is answered "… the command /NAME. …").
fn answers_to(discord: &FakeDiscord, name: &str) -> usize {
    let asked = format!("/{name}.");
    discord.see(|w| {
        w.in_channel(CHANNEL)
            .iter()
            .filter(|m| m.content.contains(&asked))
            .count()
    })
}

async fn answered(discord: &FakeDiscord, name: &str, logs: &[&Process]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers_to(discord, name) == 0 {
        assert!(
            Instant::now() < deadline,
            "/{name} was not answered; logs:\n{}",
            logs.iter()
                .map(|p| p.log_text())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mention(discord: &FakeDiscord, name: &str) -> u64 {
    discord.post(OWNER, Place::Guild, CHANNEL, &format!("/{name}"), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_gateway_holder_is_killed_the_other_identifies_and_answers_the_mention_sent_in_between_once()
 {
    let db = TestDb::create(Db::Postgres).await;
    let discord = FakeDiscord::start().await;
    let llm = FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let config = discord_config(home.path(), &discord);
    let run = ["--config", config.to_str().unwrap(), "run"];

    // A starts first and holds the gateway; B stands by.
    let mut a = Process::start(home.path(), "a", &run, Some(&db.url), &llm);
    discord
        .wait_for("A's gateway session", |w| w.connected().then_some(()))
        .await;
    let b = Process::start(home.path(), "b", &run, Some(&db.url), &llm);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        discord.see(|w| w.identifies()),
        1,
        "one session among the processes; B's log:\n{}",
        b.log_text()
    );
    mention(&discord, "before1");
    answered(&discord, "before1", &[&a, &b]).await;

    // A dies; while nobody holds the session, a mention is posted: Discord
    // dispatches it into the dead session, which nobody resumes.
    a.kill();
    let killed = Instant::now();
    discord
        .wait_for("A's connection to close", |w| {
            (!w.connected()).then_some(())
        })
        .await;
    let missed = mention(&discord, "missed2");

    discord
        .wait_for("B's gateway session", |w| {
            (w.identifies() == 2 && w.connected()).then_some(())
        })
        .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "the takeover took {took:?}");
    assert_eq!(
        discord.see(|w| w.resumes()),
        0,
        "B cannot resume A's session"
    );
    answered(&discord, "missed2", &[&b]).await;
    mention(&discord, "after3");
    answered(&discord, "after3", &[&b]).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in ["before1", "missed2", "after3"] {
        assert_eq!(
            answers_to(&discord, name),
            1,
            "/{name}; B's log:\n{}",
            b.log_text()
        );
    }
    let reads = discord.see(|w| w.history_reads.clone());
    assert!(
        reads.iter().any(|(_, ids)| ids.contains(&missed)),
        "the missed mention came from history: {reads:?}"
    );
    assert!(b.log_text().contains("took the lease"), "{}", b.log_text());
}

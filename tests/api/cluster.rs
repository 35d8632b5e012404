//! Several processes on one database, as they really run: the built
//! `soloist` binary, started and killed with SIGKILL by the test, against
//! the fake Bot API and the fake model over real HTTP.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::fake_llm::FakeLlm;
use crate::fake_telegram::{FakeTelegram, State};
use crate::helpers::{Db, TestDb};

/// A `soloist` process of this test.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `soloist ARGS` in `home` on `database_url`, its log in
    /// `home/NAME.log`.
    pub fn start(
        home: &Path,
        name: &str,
        args: &[&str],
        database_url: Option<&str>,
        llm: &FakeLlm,
    ) -> Process {
        let log = home.join(format!("{name}.log"));
        let mut command = command(home, database_url, llm);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        Process {
            child: command.spawn().expect("start soloist"),
            log,
        }
    }

    /// SIGKILL: no shutdown, no lease given up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// The first line it prints (the chat banner), waiting for it.
    pub fn first_line(&mut self) -> String {
        let stdout = self.child.stdout.as_mut().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `soloist` in `home`, with nothing from the test's own environment.
pub fn command(home: &Path, database_url: Option<&str>, llm: &FakeLlm) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soloist"));
    command
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("DISCORD_TOKEN")
        .env("SOLOIST_HOME", home)
        .env("OPENAI_BASE_URL", &llm.base_url)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .env("RUST_LOG", "warn,soloist::coordination=info");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command
}

/// A config file for `soloist run` against the fake Telegram, allowing
/// `users`; returns its path.
pub fn telegram_config(home: &Path, tg: &FakeTelegram, users: &[i64]) -> PathBuf {
    let users: Vec<String> = users.iter().map(|u| format!("\"{u}\"")).collect();
    let path = home.join("cluster.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "[telegram]\ntoken = \"{}\"\napi_url = \"{}\"\nallowed_user_ids = [{}]\npoll_timeout_secs = 1\nrate_limits = false\n\n\
         [policy.rate_limits]\nper_user_per_minute = 0\nper_user_burst = 0\nper_flow_per_minute = 0\nper_flow_burst = 0\n",
        tg.token,
        tg.api_url,
        users.join(", ")
    )
    .unwrap();
    path
}

const CHATS: i64 = 50;
const FIRST_USER: i64 = 5_000;

/// The text the bot answers `/cC_K` with contains this, once.
fn asked(chat: i64, k: usize) -> String {
    format!("/c{chat}_{k}.")
}

/// Every chat said `/cC_0` … `/cC_{per_chat-1}`: each answered exactly
/// once, in order. None while some are not answered yet; panics on a
/// duplicate or a reply out of order.
fn all_answered_in_order(state: &State, per_chat: usize) -> Option<()> {
    {
        for c in 0..CHATS {
            let chat = FIRST_USER + c;
            let replies: Vec<String> = state.sent_to(chat).iter().map(|s| s.visible()).collect();
            let mut order = Vec::new();
            for k in 0..per_chat {
                let found: Vec<usize> = replies
                    .iter()
                    .enumerate()
                    .filter(|(_, text)| text.contains(&asked(chat, k)))
                    .map(|(i, _)| i)
                    .collect();
                assert!(
                    found.len() <= 1,
                    "{} answered {} times",
                    asked(chat, k),
                    found.len()
                );
                order.push(*found.first()?);
            }
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "chat {chat} answered out of order: {replies:#?}"
            );
        }
        Some(())
    }
}

fn say_round(tg: &FakeTelegram, k: usize) {
    for c in 0..CHATS {
        let chat = FIRST_USER + c;
        tg.user_says(chat, &format!("/c{chat}_{k}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_answer_each_update_once_in_order_and_one_takes_over_when_the_poller_is_killed()
 {
    let db = TestDb::create(Db::Postgres).await;
    let tg = FakeTelegram::start().await;
    let llm = FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let users: Vec<i64> = (0..CHATS).map(|c| FIRST_USER + c).collect();
    let config = telegram_config(home.path(), &tg, &users);
    let config = config.to_str().unwrap();
    let run = ["--config", config, "run"];

    // A starts first and so holds the polling lease; B stands by.
    let mut a = Process::start(home.path(), "a", &run, Some(&db.url), &llm);
    tg.wait_for(30, "process A polling", |s| {
        (!s.offsets.is_empty()).then_some(())
    })
    .await;
    let mut b = Process::start(home.path(), "b", &run, Some(&db.url), &llm);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 200 updates from 50 chats.
    for k in 0..4 {
        say_round(&tg, k);
    }
    tg.wait_for(60, "200 updates answered", |s| all_answered_in_order(s, 4))
        .await;
    assert_eq!(
        tg.inspect(|s| s.overlapping_polls),
        0,
        "only one process polls the bot"
    );

    // Killed at a quiet moment (every reply marked delivered): a kill
    // between a send and its mark may send that message again, the
    // documented window the chaos bench counts.
    let store = soloist::store::Store::connect(&db.url, 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} replies never marked delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The poller dies; B takes over from the stored offset.
    a.kill();
    let killed = Instant::now();
    say_round(&tg, 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tg.inspect(|s| all_answered_in_order(s, 5)).is_none() {
        assert!(
            Instant::now() < deadline,
            "the updates sent after the kill were not all answered; B's log:\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the takeover took {took:?}; B's log:\n{}",
        b.log_text()
    );
    assert!(b.exited().is_none(), "B keeps running: {}", b.log_text());
    assert!(
        b.log_text().contains("took the lease"),
        "B says it took over: {}",
        b.log_text()
    );
    // Nothing received twice: every update is one row.
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM platform_updates")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(recorded, CHATS * 5);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_soloist_on_one_sqlite_file_is_refused_with_a_sentence_and_short_commands_work_beside_it()
 {
    let llm = FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let path = home.path().to_path_buf();

    let mut first = Process::start(&path, "first", &["chat"], None, &llm);
    let (line, mut first) = tokio::task::spawn_blocking(move || {
        let line = first.first_line();
        (line, first)
    })
    .await
    .unwrap();
    assert!(line.starts_with("soloist "), "{line}");

    for second in [["chat"], ["run"]] {
        let output = command(&path, None, &llm)
            .args(second)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{second:?} must be refused");
        assert!(
            stderr.contains("another soloist (run or chat) is already using")
                && stderr.contains("SQLite serves one long-running process"),
            "{second:?}: {stderr}"
        );
    }

    // A short command works beside it: an online backup.
    let copy = path.join("backup.db");
    let output = command(&path, None, &llm)
        .args(["backup", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(copy.exists());

    // The lock dies with its process: a new one starts.
    first.kill();
    let mut again = Process::start(&path, "again", &["chat"], None, &llm);
    let line = tokio::task::spawn_blocking(move || again.first_line())
        .await
        .unwrap();
    assert!(line.starts_with("soloist "), "{line}");
}

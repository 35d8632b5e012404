//! `soloist chat` as a user runs it: the real binary, lines piped in.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::fake_llm::{DEFAULT_DRAFT, FakeLlm};

/// Runs `soloist chat` in `home` with `input` on stdin and a fake model.
pub(crate) fn chat(
    home: &std::path::Path,
    llm: Option<&str>,
    input: &str,
) -> (String, String, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soloist"));
    command
        .arg("chat")
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = llm {
        command
            .env("OPENAI_BASE_URL", url)
            .env("OPENAI_API_KEY", "sk-test-not-a-real-key");
    }
    let mut child = command.spawn().expect("start soloist chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_script_drafts_and_approves_by_button_number() {
    let llm = FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let url = llm.base_url.clone();
    let path = home.path().to_path_buf();

    let (stdout, stderr, ok) = tokio::task::spawn_blocking(move || {
        chat(
            &path,
            Some(&url),
            "/draft a LinkedIn post announcing the new Website Audit price\n1\n/runs\n",
        )
    })
    .await
    .unwrap();

    assert!(ok, "{stderr}");
    assert!(
        stdout
            .starts_with("soloist 0.1.0 — chatting as the owner of Harbor & Pine Studio (SQLite: "),
        "{stdout}"
    );
    assert!(stdout.contains(DEFAULT_DRAFT));
    // Piped input is echoed after its prompt: the transcript reads as a
    // conversation.
    assert!(
        stdout.contains("> /draft a LinkedIn post announcing the new Website Audit price\n")
            && stdout.contains("> 1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[1] Approve  [2] Edit  [3] Reject"),
        "{stdout}"
    );
    assert!(stdout.contains("Approved. Saved as artifact"), "{stdout}");
    assert!(stdout.contains("completed"), "{stdout}");
    assert!(
        home.path().join("data/soloist.db").exists(),
        "the embedded default is ./data/soloist.db"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_line_gets_a_clear_reply_and_the_store_survives() {
    let llm = FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let url = llm.base_url.clone();
    let path = home.path().to_path_buf();
    let hostile = crate::fixtures::hostile();
    let lines = hostile.len();
    let input = hostile.join("\n") + "\n";

    let (stdout, stderr, ok) = tokio::task::spawn_blocking(move || chat(&path, Some(&url), &input))
        .await
        .unwrap();

    assert!(ok, "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Each line is answered before the next prompt: one reply per prompt.
    let answers: Vec<&str> = stdout.split("\n> ").skip(1).collect();
    assert_eq!(
        answers.len(),
        lines + 1,
        "one prompt per line plus the last: {stdout}"
    );
    for (line, answer) in hostile.iter().zip(&answers) {
        assert!(!answer.trim().is_empty(), "no reply to {line:?}");
    }
    assert!(
        !stdout.contains('\u{1b}'),
        "escape codes must not reach the terminal"
    );
    assert!(
        stdout.contains("I act on up to"),
        "the oversized line is refused clearly"
    );
    assert!(stdout.contains("I don't know the command /"), "{stdout}");
    assert!(stdout.contains("Tell me what to draft"));

    // The store is intact and still works after the barrage.
    let (after, _, ok) = chat(home.path(), None, "/runs\n");
    assert!(ok);
    assert!(after.contains("Recent runs:"), "{after}");
}

#[test]
fn chat_starts_and_helps_with_no_model_and_no_token() {
    let home = tempfile::tempdir().unwrap();

    let (stdout, stderr, ok) = chat(home.path(), None, "/help\n/draft a post\n");

    assert!(ok, "{stderr}");
    assert!(stdout.contains("model: none configured"), "{stdout}");
    assert!(stdout.contains("/draft TEXT"));
    assert!(stdout.contains("No model is configured: set OPENAI_API_KEY"));
}

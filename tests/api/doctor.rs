//! `soloist doctor`: one line per finding, every problem with its fix.

use soloist::config::Secret;
use soloist::doctor::{self, Finding};

use crate::fake_llm::FakeLlm;
use crate::helpers::{Db, TestDb, test_settings};

fn problems(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.is_problem())
        .map(Finding::line)
        .collect()
}

#[tokio::test]
async fn a_healthy_setup_has_no_problems() {
    let llm = FakeLlm::start().await;
    let db = TestDb::create(Db::Postgres).await;
    let mut settings = test_settings(Some(&llm.base_url));
    settings.database.url = Secret::new(db.url.clone());
    soloist::store::Store::open(&db.url, 1).await.unwrap();
    let home = tempfile::tempdir().unwrap();

    let findings = doctor::check(&settings, home.path()).await;

    assert!(problems(&findings).is_empty(), "{findings:#?}");
    let lines: Vec<String> = findings.iter().map(Finding::line).collect();
    let quality = "ok    tier quality: openai/gpt-4o (then 1 fallback(s))";
    assert!(lines.iter().any(|l| l == quality), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok    provider openai at")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok    database PostgreSQL")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn each_problem_is_named_with_its_fix() {
    let home = tempfile::tempdir().unwrap();
    let mut settings = test_settings(None);
    settings.database.url = Secret::new("postgres://nobody@127.0.0.1:9/none");
    settings.engine.lease_secs = 1.0;

    let lines = problems(&doctor::check(&settings, home.path()).await);

    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains("cannot open the database") && lines[0].contains("→ check DATABASE_URL")
    );
    assert!(lines[1].contains("no model provider") && lines[1].contains("→ set OPENAI_API_KEY"));
    assert!(lines[2].contains("lease_secs"));
}

#[tokio::test]
async fn a_database_password_never_appears_in_a_finding() {
    let home = tempfile::tempdir().unwrap();
    let mut settings = test_settings(None);
    settings.database.url = Secret::new("postgres://maya:hunter2secret@127.0.0.1:9/none");

    let text: String = doctor::check(&settings, home.path())
        .await
        .iter()
        .map(Finding::line)
        .collect();

    assert!(!text.contains("hunter2secret"), "{text}");
}

#[tokio::test]
async fn a_database_password_in_the_query_never_appears_in_a_finding() {
    let home = tempfile::tempdir().unwrap();
    let mut settings = test_settings(None);
    settings.database.url =
        Secret::new("postgres://maya@127.0.0.1:9/none?sslmode=disable&password=hunter2secret");

    let text: String = doctor::check(&settings, home.path())
        .await
        .iter()
        .map(Finding::line)
        .collect();

    assert!(text.contains("cannot open the database"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
}

#[tokio::test]
async fn a_provider_url_with_credentials_never_appears_in_a_finding() {
    let home = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Some("http://maya:hunter2secret@127.0.0.1:9/v1"));
    settings.database.url = Secret::new("sqlite::memory:");

    let text: String = doctor::check(&settings, home.path())
        .await
        .iter()
        .map(Finding::line)
        .collect();

    assert!(text.contains("cannot reach provider openai"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
}

#[tokio::test]
async fn a_discord_token_with_nobody_allowed_is_a_problem_until_the_owner_is_set() {
    let llm = FakeLlm::start().await;
    let mut settings = test_settings(Some(&llm.base_url));
    settings.discord.token = soloist::config::Secret::new("a-token");
    let home = tempfile::tempdir().unwrap();

    let before = problems(&doctor::check(&settings, home.path()).await);
    settings.owner.discord_user_id = "111".into();
    let after = problems(&doctor::check(&settings, home.path()).await);

    assert!(
        before
            .iter()
            .any(|p| p.contains("SOLOIST__OWNER__DISCORD_USER_ID")),
        "{before:#?}"
    );
    assert!(!before.iter().any(|p| p.contains("a-token")));
    assert!(!after.iter().any(|p| p.contains("Discord")), "{after:#?}");
}

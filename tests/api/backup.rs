//! `soloist backup` and restore, and the refusal of a schema newer than
//! the binary.

use soloist::app::App;
use soloist::config::Secret;

use crate::helpers::{Db, TestApp, test_settings};
use crate::on_both_backends;

on_both_backends!(a_database_migrated_by_a_newer_soloist_is_refused_with_a_sentence);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_taken_while_running_restores_into_a_new_home_with_the_data() {
    let test = TestApp::spawn(Db::Sqlite).await;
    let offer = test.say("/draft a post about the spring audit").await;
    assert!(!offer.is_empty());
    let runs = test.count("runs").await;
    assert_eq!(runs, 1);

    // Online: the app keeps its pool open while the copy is taken.
    let target = test.home.path().join("backups/soloist-backup.db");
    soloist::backup::backup(&test.db.url, &target)
        .await
        .expect("backup");
    assert!(target.exists());
    // Never over an existing file.
    let again = soloist::backup::backup(&test.db.url, &target)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");

    // Restore: the file put in place of data/soloist.db in a new home.
    let restored = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(restored.path().join("data")).unwrap();
    std::fs::copy(&target, restored.path().join("data/soloist.db")).unwrap();
    let mut settings = test_settings(Some(&test.llm.base_url));
    settings.database.url = Secret::default();
    let app = App::build(settings, restored.path())
        .await
        .expect("the restored database opens");
    assert_eq!(crate::helpers::count(&app.store, "runs").await, runs);
    let original = test.app.store.recent_runs(10).await.unwrap();
    let copied = app.store.recent_runs(10).await.unwrap();
    assert_eq!(
        original.iter().map(|r| r.id).collect::<Vec<_>>(),
        copied.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    assert_eq!(
        crate::helpers::count(&app.store, "journal").await,
        test.count("journal").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_postgres_points_to_pg_dump() {
    let error = soloist::backup::backup(
        "postgres://root@localhost/whatever",
        std::path::Path::new("/tmp/never-written.db"),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("use pg_dump"), "{error}");
}

async fn a_database_migrated_by_a_newer_soloist_is_refused_with_a_sentence(db: Db) {
    let test = TestApp::spawn(db).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from a newer soloist', TRUE, $1, 0)",
    )
    .bind(vec![0u8; 4])
    .execute(test.app.store.pool())
    .await
    .unwrap();

    let mut settings = test_settings(Some(&test.llm.base_url));
    settings.database.url = Secret::new(test.db.url.clone());
    let error = App::build(settings, test.home.path()).await.unwrap_err();
    let chain = soloist::frontdoor::error_chain(&error);
    assert!(
        chain.contains("schema is at version 9999, newer than this soloist knows")
            && chain.contains("run that version or a newer one"),
        "{chain}"
    );
    // The process already running keeps working on it.
    assert!(!test.say("/help").await.is_empty());
}

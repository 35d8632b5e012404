//! `cargo bench --bench policy`: the time the policy layer adds to one
//! message: redacting a request and a system prompt, the injection
//! detector, the draft checks, and restoring the answer. Inputs are the
//! project's adversarial and clean fixtures, read at run time.

use std::time::{Duration, Instant};

use soloist::config::{LoadOptions, Settings};
use soloist::policy::{Guard, Origin, Redactor, Source};

fn lines(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(" => ").next().unwrap_or(l).to_string())
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("policy bench: run it with `cargo bench --bench policy`");
        return;
    }
    let settings = Settings::load(&LoadOptions::default()).unwrap();
    let guard = Guard::new(&settings).unwrap();
    let policy = &settings.policy.guard;
    let redactor = Redactor::new(&policy.pii_kinds, &policy.own_contacts);
    let system = include_str!("../prompts/system.md");
    let mut messages = lines("adversarial/pii.txt");
    messages.extend(lines("adversarial/prompt_injection.txt"));
    messages.extend(lines("clean_messages.txt"));
    let drafts = lines("clean_drafts.txt");

    let mut samples: Vec<Duration> = Vec::new();
    for round in 0..200 {
        for (i, message) in messages.iter().enumerate() {
            let draft = &drafts[(i + round) % drafts.len()];
            let started = Instant::now();
            let mut redaction = redactor.redaction();
            let _ = redaction.redact(system);
            let sent = redaction.redact(message);
            let review = guard.review(&[Source::request(Origin::Forwarded, message)], draft);
            let shown = redaction.restore(&sent);
            samples.push(started.elapsed());
            std::hint::black_box((review, shown));
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "policy layer per message ({} samples): p50 {:?}, p99 {:?}, max {:?} (target <= 1 ms)",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

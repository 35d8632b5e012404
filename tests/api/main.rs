//! soloist's integration tests: one binary, real databases (a fresh
//! PostgreSQL database per test, SQLite in a temp dir), real HTTP to a fake
//! model server.

mod fake_discord;
mod fake_llm;
mod fake_smtp;
mod fake_telegram;
mod fixtures;
mod helpers;

mod approvals;
mod batch;
mod console;
mod digest;
mod discord;
mod doctor;
mod email;
mod failures;
mod http;
mod leads;
mod memory;
mod models;
mod offers;
mod outbox;
mod policy;
mod recovery;
mod routing;
mod schedules;
mod store;
mod telegram;

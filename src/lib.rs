//! # soloist
//!
//! A self-hosted AI workflow OS for one-person companies. The operator talks
//! to a bot (Telegram, Discord or the terminal); the bot runs durable flows
//! with model calls and approvals, and remembers what was decided.
//!
//! ## Layout
//!
//! The path of one message, left to right:
//!
//! - [`adapters`]: platform types end here: parsing, rendering, the
//!   platform's API client and its limits. `console` is the terminal;
//!   `telegram` polls (or takes a webhook) and delivers the outbox within
//!   Telegram's limits; `discord` takes slash commands, presses and mentions
//!   through the gateway (serenity), reads back from channel history the
//!   mentions sent between two sessions, and delivers the outbox over REST.
//! - [`frontdoor`]: the same way in for every platform: record the update,
//!   queue it in its chat's lane (in order per chat, chats in parallel,
//!   bounded, the poller held back when full), hand it to the controller
//!   (retried, a failure never dropped), wake delivery with the chat. The
//!   raw update and its inbound are one commit per platform batch; a
//!   command that only reads is answered in one more.
//! - [`controller`]: who is speaking and where (`controller::access`),
//!   which command or button, which flow. `commands` holds the one command
//!   table (parsing, `/help`, the platforms' menus and the router's intents
//!   come from it), `buttons` the presses, `reports` the read-only reports,
//!   `routing` free text.
//! - [`engine`]: durable runs and every run transition: claim (a fenced
//!   lease per claim, renewed by a heartbeat while a step runs), execute a
//!   step, commit it (a step that only gathers, context or retrieval,
//!   commits with the next one under the same claim), decide, take input,
//!   retry, cancel
//!   (`engine::transitions`), resume after a crash, replay. Each step kind
//!   is in `engine/steps.rs`, the model call and its failure buttons in
//!   `engine/generate_step.rs`.
//! - [`flows`]: flows as data (`config/flows/*.toml`) and prompt templates
//!   (`prompts/*.md`); a step's `next` (one step, or one per outcome)
//!   branches and loops, checked at load; the engine journals each route;
//!   an approve step may rename its buttons (`flows::ButtonLabels`).
//! - [`events`]: the event worker: flows with `on = "kind"` start once per
//!   event (`store::events`, written in the transaction of their cause).
//! - [`agents`]: model calls through rig-core: the fallback chain and
//!   retries (`router`), the budget gate and its reservations (`budget`),
//!   the cost ledger (`ledger`), batches (`batch`).
//! - [`policy`]: guardrails on by default: trust levels and quoting of
//!   text from others, injection detection, PII redaction before model
//!   calls, draft checks (never-share, secrets, links, brand, prices),
//!   effects that need an approval, rate limits, the fast-tier review of
//!   high-quality drafts and the optional router-tier injection
//!   classifier; audited per run.
//! - [`autonomy`]: graduated automation: each flow's level (`always`,
//!   `borderline`, `never`) from `[autonomy]` or `/autonomy`, which an
//!   approve step asks before waiting (a guardrail flag always waits);
//!   graduation proposals in the digest (Yes / Not yet), drop-back on an
//!   edit or rejection, every change an audit row.
//! - [`leads`]: leads from `POST /hooks/lead` (shared secret or HMAC) and
//!   `/lead`, stored once per id with a `lead.received` event; the
//!   deterministic scoring rules of `[leads.criteria]`; `/leads`; the
//!   follow-up reminder job and `soloist eval leads`.
//! - [`memory`]: knowledge with provenance (ingest, readable pages, chunks,
//!   full-text retrieval on both databases (`memory::fulltext`, ranking a
//!   bounded set of matches) fused with an optional
//!   `/embeddings` embedder's vectors, or all-MiniLM-L6-v2 run in process
//!   in the `local-embed` build), the decision log, the chat window and
//!   working memory; the `retrieve` step and `/remember`, `/memory`,
//!   `/forget`, `/sources`, `/forget_person`.
//! - [`offers`]: productized offers (`/offer`): the quote computed from
//!   `[[offers]]` (no model writes a price), the key-variable review card,
//!   the `quote` and `proposal` step kinds, the proposal PDF (printpdf).
//! - [`outbox`]: delivers queued messages to a platform: rows claimed with
//!   a lease, in order per chat, fair across chats, within the platform's
//!   rate limits, retried until delivered, marked once. Woken with the
//!   chats that have a row (in process, and on PostgreSQL by LISTEN/NOTIFY
//!   from any process) instead of reading every pending row. Started once
//!   for every platform by [`outbox::start`].
//! - [`email`]: e-mail out over SMTP (lettre, rustls) as one more outbox
//!   target: `email::queue_in` inside a change's transaction, once per
//!   idempotency key; delivered, retried and paced by the outbox.
//! - [`retry_after`]: every server's "retry after", read with a cap.
//! - [`runtime`]: `soloist run`: the worker, the scheduler, HTTP and the
//!   platforms until shutdown; a service that stops on its own stops the
//!   process with an error.
//! - [`scheduler`]: cron schedules in the database; a due tick fires once
//!   (unique key), missed ticks follow the catch-up policy and are recorded.
//!   Flow files may declare their own schedule ([`scheduler::FlowSchedule`]).
//!   Built-in housekeeping jobs (working-memory purge, payload pruning, URL
//!   refresh, reservation sweep, fire-history pruning, scheduled post
//!   delivery) run as schedules whose misses are not recorded
//!   ([`scheduler::housekeeping`]). Undeclared schedules are retired at start.
//! - [`coordination`]: work only one process may do when several share a
//!   database (the Telegram poller, the Discord gateway shard): a leased
//!   row renewed by a heartbeat, taken over when its holder dies; and the
//!   lock file that keeps a SQLite database to one long-running process.
//! - [`backup`]: `soloist backup` (SQLite's `VACUUM INTO`).
//! - [`funnel`]: the content funnel's step kinds (`fact_check`, `publish`,
//!   Revise / Back on an approval), the publisher (due posts, once), the
//!   `retract` compensation flow files declare, `/result` numbers.
//! - [`digest`]: the daily digest: SQL numbers (retrieval use and
//!   guardrail flags in `digest::usage`), a template, a chart (PNG), an
//!   optional fast-tier summary (`digest::summary`). The `digest` flow
//!   (`config/flows/digest.toml`) runs them as steps (`engine/digest_steps.rs`).
//! - [`http`]: `/healthz` (adapters report through [`http::Health`]) and
//!   `/metrics` (Prometheus) for `soloist run`; the Telegram webhook mounts
//!   on it ([`http::Hooks`]).
//! - [`store`]: PostgreSQL or SQLite, one set of queries for both; tables
//!   and transactions ([`store::Tx`]), not the run state machine; on
//!   SQLite, one writer connection with read-only ones beside it
//!   ([`store::Store::reads`]), group commit (commits written with
//!   `synchronous = NORMAL`, then one shared flush of the log for all the
//!   commits made while the previous flush ran; a commit still returns
//!   only once it is on disk) and the full-text rank function it
//!   registers (`soloist_bm25`).
//! - [`domain`]: `Inbound`, `Outbound`, buttons, ids, run events; no I/O.
//! - [`config`]: layered typed settings with secrets that never print, and
//!   redaction of URLs that may carry credentials.
//! - [`app`]: wiring: builds the pieces from settings.
//! - [`doctor`]: `soloist doctor`'s checks.

pub mod adapters;
pub mod agents;
pub mod app;
pub mod autonomy;
pub mod backup;
pub mod config;
pub mod controller;
pub mod coordination;
pub mod digest;
pub mod doctor;
pub mod domain;
pub mod email;
pub mod engine;
pub mod events;
pub mod flows;
pub mod frontdoor;
pub mod funnel;
pub mod http;
pub mod leads;
pub mod memory;
pub mod offers;
pub mod outbox;
pub mod policy;
pub mod retry_after;
pub mod runtime;
pub mod scheduler;
pub mod store;

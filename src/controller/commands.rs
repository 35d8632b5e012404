//! The command list, written once: [`COMMAND_TABLE`] gives each command
//! its name, what it takes, what it does, the words the router reads for
//! it, and its handler. Parsing, `/help`, the platforms' command menus
//! ([`COMMANDS`]) and the router's intents are all derived from it. Adding
//! a command is one entry here and one handler method on [`Controller`].

use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;

use super::{Controller, ControllerError, Handled, access, cost, policy_hooks};
use crate::agents::HOW_TO_CONFIGURE;
use crate::domain::Inbound;
use crate::engine::StartRun;

/// What a handler returns: the replies and the run to drive.
pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Handled, ControllerError>> + Send + 'a>>;

/// A command's handler: the controller, the update, the text after the
/// command's name (trimmed).
pub type Handler = for<'a> fn(&'a Controller, &'a Inbound, &'a str) -> HandlerFuture<'a>;

/// One command.
#[derive(Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    /// Other names it answers to (`/start` is Telegram's first message).
    pub aliases: &'static [&'static str],
    /// What it takes, shown after the name: "TEXT", "ID", or "".
    pub args: &'static str,
    pub description: &'static str,
    /// What free text meaning this command reads like, for the router.
    /// None: the router never picks it (it needs an argument, or it starts
    /// a flow the router already offers).
    pub intent: Option<&'static str>,
    /// A report with business data (runs, drafts, spend): answered only in
    /// a private chat (see `access::report_refusal`).
    pub report: bool,
    pub handler: Handler,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Wraps an async handler method `fn(&self, &Inbound, &str)` as a
/// [`Handler`].
macro_rules! handler {
    ($method:ident) => {{
        fn call<'a>(
            controller: &'a Controller,
            inbound: &'a Inbound,
            args: &'a str,
        ) -> HandlerFuture<'a> {
            Box::pin(controller.$method(inbound, args))
        }
        call as Handler
    }};
}

/// Commands whose handlers only read: answered, then recorded with their
/// reply in one transaction (`Controller::answer_read_only`).
pub(super) const READ_ONLY: &[&str] = &["help", "runs", "run", "cost", "policy"];

/// Every command soloist understands, in the order menus list them.
pub const COMMAND_TABLE: &[CommandSpec] = &[
    CommandSpec {
        name: "draft",
        aliases: &[],
        args: "TEXT",
        description: "draft content in your brand voice, then approve, edit or reject it",
        intent: None,
        report: false,
        handler: handler!(draft),
    },
    CommandSpec {
        name: "offer",
        aliases: &[],
        args: "TEXT",
        description: "a proposal: CLIENT, OFFER, start …, email=…; review the terms, then approve the PDF",
        intent: None,
        report: false,
        handler: handler!(offer),
    },
    CommandSpec {
        name: "runs",
        aliases: &[],
        args: "",
        description: "recent runs and their status",
        intent: Some("list recent runs (workflows) and their status"),
        report: true,
        handler: handler!(list_runs),
    },
    CommandSpec {
        name: "run",
        aliases: &[],
        args: "ID",
        description: "one run in detail",
        intent: None,
        report: true,
        handler: handler!(show_run),
    },
    CommandSpec {
        name: "post",
        aliases: &[],
        args: "TEXT",
        description: "write a post, fact-check it, approve it, then publish it now or later",
        intent: None,
        report: false,
        handler: handler!(post),
    },
    CommandSpec {
        name: "retract",
        aliases: &[],
        args: "ID",
        description: "take down what a run published, or cancel it if not out yet",
        intent: None,
        report: false,
        handler: handler!(retract),
    },
    CommandSpec {
        name: "result",
        aliases: &[],
        args: "ID views=N clicks=N",
        description: "store a published post's numbers for the digest",
        intent: None,
        report: false,
        handler: handler!(result),
    },
    CommandSpec {
        name: "approvals",
        aliases: &[],
        args: "",
        description: "drafts waiting for your decision, with their buttons",
        intent: Some("show the drafts waiting for the operator's decision"),
        report: true,
        handler: handler!(list_approvals),
    },
    CommandSpec {
        name: "retry",
        aliases: &[],
        args: "ID",
        description: "try a failed run again",
        intent: None,
        report: false,
        handler: handler!(retry),
    },
    CommandSpec {
        name: "cost",
        aliases: &[],
        args: "",
        description: "spend today and this month against the budget, by flow and by model",
        intent: Some("report what the models cost today and this month against the budget"),
        report: true,
        handler: handler!(cost),
    },
    CommandSpec {
        name: "policy",
        aliases: &[],
        args: "",
        description: "what the guardrails check, in a few lines",
        intent: None,
        report: false,
        handler: handler!(policy),
    },
    CommandSpec {
        name: "digest",
        aliases: &[],
        args: "",
        description: "the daily digest now: runs, approvals, cost, with a chart",
        intent: Some("send the daily digest now: runs, approvals and cost, with a chart"),
        report: true,
        handler: handler!(digest),
    },
    CommandSpec {
        name: "schedules",
        aliases: &[],
        args: "",
        description: "schedules, their next run, pause or resume",
        intent: Some("list the schedules, when each runs next, and pause or resume one"),
        report: false,
        handler: handler!(list_schedules),
    },
    CommandSpec {
        name: "schedule",
        aliases: &[],
        args: "WHEN",
        description: "change when a schedule runs: NAME HH:MM, e.g. digest 07:30",
        intent: None,
        report: false,
        handler: handler!(change_schedule),
    },
    CommandSpec {
        name: "lead",
        aliases: &[],
        args: "TEXT",
        description: "qualify a lead: paste or forward its message",
        intent: None,
        report: false,
        handler: handler!(new_lead),
    },
    CommandSpec {
        name: "leads",
        aliases: &[],
        args: "",
        description: "recent leads, their tier and status",
        intent: None,
        report: true,
        handler: handler!(list_leads),
    },
    CommandSpec {
        name: "autonomy",
        aliases: &[],
        // Optional (the brackets): alone it lists.
        args: "[FLOW LEVEL]",
        description: "each flow's autonomy level, or set one: always, borderline or never",
        intent: None,
        report: false,
        handler: handler!(autonomy),
    },
    CommandSpec {
        name: "remember",
        aliases: &[],
        args: "TEXT",
        description: "keep a fact or note for later drafts",
        intent: None,
        report: false,
        handler: handler!(remember),
    },
    CommandSpec {
        name: "memory",
        aliases: &[],
        args: "QUERY",
        description: "what I would retrieve for that text, and why",
        intent: None,
        report: true,
        handler: handler!(search_memory),
    },
    CommandSpec {
        name: "forget",
        aliases: &[],
        args: "SOURCE",
        description: "remove a source and everything cut from it",
        intent: None,
        report: false,
        handler: handler!(forget),
    },
    CommandSpec {
        name: "sources",
        aliases: &[],
        args: "",
        description: "what I know from: files, pages and notes",
        intent: None,
        report: true,
        handler: handler!(list_sources),
    },
    // Telegram's menu takes only [a-z0-9_] in a name; the hyphenated
    // spelling the README used first still works.
    CommandSpec {
        name: "forget_person",
        aliases: &["forget-person"],
        args: "PERSON",
        description: "erase what I stored about one person (an e-mail or a full name)",
        intent: None,
        report: false,
        handler: handler!(forget_person),
    },
    CommandSpec {
        name: "help",
        aliases: &["start"],
        args: "",
        description: "this list",
        intent: Some("explain what the assistant can do and its commands"),
        report: false,
        handler: handler!(help),
    },
];

/// The commands as a platform's command menu lists them: name, what it
/// takes, what it does (derived from [`COMMAND_TABLE`]).
pub const COMMANDS: [(&str, &str, &str); COMMAND_TABLE.len()] = menu();

const fn menu() -> [(&'static str, &'static str, &'static str); COMMAND_TABLE.len()] {
    let mut out = [("", "", ""); COMMAND_TABLE.len()];
    let mut i = 0;
    while i < COMMAND_TABLE.len() {
        let spec = &COMMAND_TABLE[i];
        out[i] = (spec.name, spec.args, spec.description);
        i += 1;
    }
    out
}

/// A parsed command: which one, and the text after its name.
#[derive(Debug, Clone, Copy)]
pub struct Command<'t> {
    pub spec: &'static CommandSpec,
    pub args: &'t str,
}

impl PartialEq for Command<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.spec.name == other.spec.name && self.args == other.args
    }
}

impl<'t> Command<'t> {
    /// `/name args`; a Telegram-style `/name@botname` suffix is ignored.
    /// Err carries the unknown name (clipped), for the reply.
    pub fn parse(text: &'t str) -> Result<Command<'t>, String> {
        let text = text.trim();
        let (head, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let name = head
            .trim_start_matches('/')
            .split('@')
            .next()
            .unwrap_or_default();
        match find(name) {
            Some(spec) => Ok(Command {
                spec,
                args: args.trim(),
            }),
            None => Err(name.chars().take(40).collect()),
        }
    }
}

/// The command called `name` (or one of its aliases), any case.
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMAND_TABLE.iter().find(|spec| {
        spec.name.eq_ignore_ascii_case(name)
            || spec.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// The commands free text may mean, with the words the router reads.
pub fn command_intents() -> impl Iterator<Item = (&'static str, &'static str)> {
    COMMAND_TABLE
        .iter()
        .filter_map(|spec| spec.intent.map(|words| (spec.name, words)))
}

/// `/help`'s answer.
pub fn help_text() -> String {
    let mut text = String::from("I run your business workflows and ask before anything goes out.");
    for (name, args, description) in COMMANDS {
        let args = if args.is_empty() {
            String::new()
        } else {
            format!(" {args}")
        };
        let _ = write!(text, "\n/{name}{args}: {description}");
    }
    text.push_str("\nOr just write what you need: with a model configured, I work out which of these you mean.");
    text
}

/// The handlers of the commands that are not reports.
impl Controller {
    pub(super) async fn command(
        &self,
        inbound: &Inbound,
        command: Command<'_>,
    ) -> Result<Handled, ControllerError> {
        if let Some(refusal) = access::report_refusal(inbound, command.spec.report) {
            return Ok(Handled::private(inbound, refusal));
        }
        (command.spec.handler)(self, inbound, command.args).await
    }

    async fn help(&self, _inbound: &Inbound, _args: &str) -> Result<Handled, ControllerError> {
        Ok(Handled::reply(help_text()))
    }

    async fn cost(&self, _inbound: &Inbound, _args: &str) -> Result<Handled, ControllerError> {
        Ok(Handled::reply(cost::report(&self.engine).await?))
    }

    async fn draft(&self, inbound: &Inbound, request: &str) -> Result<Handled, ControllerError> {
        if request.is_empty() {
            return Ok(Handled::reply(
                "Tell me what to draft, e.g. /draft a LinkedIn post announcing the new Website Audit price",
            ));
        }
        // POLICY HOOK: a burst beyond the limits gets one sentence, no model call.
        if let Some(limited) = policy_hooks::limited(&self.engine, inbound, Some("draft")).await? {
            return Ok(limited);
        }
        self.start_flow(inbound, "draft", request.to_string()).await
    }

    async fn retry(&self, inbound: &Inbound, id: &str) -> Result<Handled, ControllerError> {
        let run = match self.find_run(id).await? {
            Ok(run) => run,
            Err(message) => return Ok(Handled::reply(message)),
        };
        // The retry and the update's handling commit together, so a
        // redelivered /retry after a crash is a duplicate, not "not failed".
        let mut tx = self.store.begin().await?;
        let handled = if self
            .engine
            .retry_in(&mut tx, run.id, &inbound.user_name, None)
            .await?
        {
            Handled::drive(run.id)
        } else {
            Handled::reply(format!(
                "Run {} is {}, not failed; there is nothing to retry.",
                run.id.short(),
                run.status
            ))
        };
        tx.finish_inbound(inbound, &handled.replies).await?;
        tx.commit().await?;
        Ok(handled.finished())
    }

    /// Starts `flow` for `request`, unless it needs a model and none is
    /// configured (then the reply says how to configure one).
    pub(super) async fn start_flow(
        &self,
        inbound: &Inbound,
        flow: &str,
        request: String,
    ) -> Result<Handled, ControllerError> {
        if let Some(reply) = self.refuse_without_model(flow) {
            return Ok(reply);
        }
        // POLICY HOOK: the request's origin (forwarded text is data).
        // The run, its origin and the update's handling commit together:
        // one commit where there were three, and a redelivered update finds
        // itself handled rather than its run.
        let origin = crate::policy::origin_of(inbound);
        let mut tx = self.store.begin().await?;
        let run = self
            .engine
            .start_with_origin_in(&mut tx, self.start_request(inbound, flow, request), origin)
            .await?;
        tx.finish_inbound(inbound, &[]).await?;
        tx.commit().await?;
        Ok(Handled::drive(run).finished())
    }

    pub(super) fn refuse_without_model(&self, flow: &str) -> Option<Handled> {
        let needs_model = self.flows.get(flow).is_some_and(|f| f.needs_model());
        (needs_model && !self.agents.is_configured()).then(|| Handled::reply(HOW_TO_CONFIGURE))
    }

    /// A start keyed on the update, so a redelivered update finds its run.
    pub(super) fn start_request(&self, inbound: &Inbound, flow: &str, request: String) -> StartRun {
        StartRun {
            flow: flow.into(),
            chat: inbound.chat.clone(),
            request,
            requested_by: inbound.user_name.clone(),
            idempotency_key: format!("inbound:{}:{}", inbound.chat.platform, inbound.update_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_arguments_aliases_and_bot_suffixes() {
        let draft = Command::parse("/draft a post").unwrap();
        assert_eq!((draft.spec.name, draft.args), ("draft", "a post"));
        let suffixed = Command::parse("/draft@soloist_bot  hi ").unwrap();
        assert_eq!((suffixed.spec.name, suffixed.args), ("draft", "hi"));
        assert_eq!(Command::parse("/RUNS").unwrap().spec.name, "runs");
        assert_eq!(Command::parse("/start").unwrap().spec.name, "help");
        assert_eq!(
            Command::parse("/unknowncommand with args"),
            Err("unknowncommand".into())
        );
    }

    #[test]
    fn the_menu_help_and_intents_all_come_from_the_one_table() {
        assert_eq!(COMMANDS.len(), COMMAND_TABLE.len());
        let help = help_text();
        for spec in COMMAND_TABLE {
            assert!(help.contains(&format!("/{}", spec.name)), "{help}");
            assert!(find(spec.name).is_some());
        }
        let intents: Vec<&str> = command_intents().map(|(name, _)| name).collect();
        assert_eq!(
            intents,
            ["runs", "approvals", "cost", "digest", "schedules", "help"]
        );
    }
}

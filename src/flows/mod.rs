//! Flows as data. A flow is `config/flows/NAME.toml`: its steps, their
//! prompts (`prompts/*.md`, minijinja templates) and its cost label. The
//! binary carries the built-in flows and prompts; a file of the same name
//! under the home directory overrides one.

mod labels;
mod prompts;

pub use labels::ButtonLabels;
pub use prompts::{PromptError, Prompts};

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

pub use crate::domain::{CostLabel, Tier};

/// Built-in flows, compiled in.
const BUILT_IN_FLOWS: &[(&str, &str)] = &[
    ("draft", include_str!("../../config/flows/draft.toml")),
    // FUNNEL: draft, fact-check, approve or revise, publish, retract.
    ("post", include_str!("../../config/flows/post.toml")),
    (
        "lead-qualification",
        include_str!("../../config/flows/lead-qualification.toml"),
    ),
    ("offer", include_str!("../../config/flows/offer.toml")),
    // SCHEDULE: the daily digest (the `digest` schedule and /digest).
    ("digest", include_str!("../../config/flows/digest.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("flow file {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    pub description: String,
    pub cost_label: CostLabel,
    /// SCHEDULE: the flow starts itself on this cron (a schedule row
    /// written at start); see [`crate::scheduler::FlowSchedule`].
    #[serde(default)]
    pub schedule: Option<crate::scheduler::FlowSchedule>,
    /// The event kind that starts this flow by itself (`"lead.received"`):
    /// one run per event, its payload in the run's input.
    #[serde(default)]
    pub on: Option<String>,
    pub steps: Vec<StepDef>,
}

// No deny_unknown_fields here: serde cannot combine it with flatten; the
// step kind's variants deny unknown fields instead.
#[derive(Debug, Clone, Deserialize)]
pub struct StepDef {
    pub name: String,
    /// POLICY: what the step does to the world (`policy::Effect` names);
    /// a required effect needs an approve step before it.
    #[serde(default)]
    pub effects: Vec<String>,
    /// FUNNEL: how to undo what the step did to the world (`retract` for
    /// a publish step), run by `/retract RUN`; see [`crate::funnel`].
    #[serde(default)]
    pub compensate: Option<String>,
    /// Where the run goes after this step: one step, or one per outcome
    /// (the string at `"outcome"` in the step's output). None: the
    /// following step in the file.
    #[serde(default)]
    pub next: Option<Next>,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// A step's `next`: `next = "reply"` or `next = { hot = "reply", cold =
/// "decline" }`. `"end"` completes the run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Next {
    To(String),
    ByOutcome(BTreeMap<String, String>),
}

/// The name a `next` uses to complete the run; no step may take it.
pub const END: &str = "end";

/// Where a run goes after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Step(usize),
    End,
}

/// The step kinds soloist knows; a flow file picks one per step.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StepKind {
    /// Gathers the business context and the request.
    Context,
    /// One model call: a system prompt and a prompt, both templates.
    Generate {
        tier: Tier,
        system: String,
        prompt: String,
        max_tokens: u64,
        #[serde(default)]
        temperature: Option<f64>,
        /// false: the call may wait for the next batch (cheaper, slower).
        #[serde(default = "urgent_by_default")]
        urgent: bool,
        /// The answers the model may give (`["hot", "borderline", "cold"]`):
        /// its answer becomes the step's outcome, which `next` can branch
        /// on. Empty: the step has no outcome.
        #[serde(default)]
        outcomes: Vec<String>,
    },
    /// Retrieves what the business knows about the request (knowledge,
    /// past decisions, the recent conversation); see [`crate::memory`].
    Retrieve {
        #[serde(default)]
        top_k: Option<usize>,
    },
    /// Asks for Approve / Edit / Reject on the text another step produced.
    Approve {
        draft_from: String,
        artifact_kind: String,
        /// FUNNEL: also offer Revise (the step's outcome is `revise`, with
        /// the operator's instruction; the flow loops back to rewrite) and
        /// Back (the version before the latest revision).
        #[serde(default)]
        revise: bool,
        /// LEADS: the buttons' own words (`labels = { approve = "Pursue",
        /// reject = "Decline" }`); the outcomes stay approved / rejected.
        #[serde(default)]
        labels: ButtonLabels,
    },
    /// FUNNEL: checks every factual claim of a draft against the knowledge
    /// base (one structured call, fast tier by default); the approval lists
    /// the unsupported and contradicted ones with their sources.
    #[serde(rename = "fact_check")]
    FactCheck {
        draft_from: String,
        #[serde(default = "fast_tier")]
        tier: Tier,
        #[serde(default = "fact_check_system")]
        system: String,
        #[serde(default = "fact_check_prompt")]
        prompt: String,
        #[serde(default)]
        top_k: Option<usize>,
    },
    /// FUNNEL: asks when (now, tomorrow 09:00, Monday 09:00, a time),
    /// then publishes the text to `publish.targets` at that time, once.
    Publish { text_from: String },
    /// Structured fields of the run's lead by a model (name, company,
    /// e-mail, budget, timeline, need, website); the lead is quoted as
    /// untrusted data. See [`crate::leads::steps`].
    Extract {
        tier: Tier,
        system: String,
        prompt: String,
        max_tokens: u64,
    },
    /// Past leads, clients and offers from memory, and the lead's website
    /// through the guarded fetcher; all quoted as untrusted.
    Enrich {
        #[serde(default)]
        top_k: Option<usize>,
    },
    /// Deterministic score of the fields `from` extracted, by
    /// `[leads.criteria]`; its outcome is the tier (hot, borderline, cold).
    Score { from: String },
    /// Sends the text an approve step saved to the run's lead by e-mail,
    /// once, and sets the lead's status (`replied`, `declined`, …). Only an
    /// approved draft is sent.
    Email {
        draft_from: String,
        subject: String,
        #[serde(default)]
        status: Option<String>,
    },
    /// Sets the run's lead's status (`pursuing`, `declined`, …).
    #[serde(rename = "lead_status")]
    LeadStatus { status: String },
    /// The confirmed terms of the run's offer (`/offer`), priced from
    /// `[[offers]]`: client, offer, start, e-mail and the quote.
    Quote,
    /// A proposal document: `template` (a prompt file) rendered with the
    /// quote and two model texts, as Markdown and as a PDF attached to
    /// the approval; amounts in the model texts that the quote does not
    /// state are flagged.
    Proposal {
        template: String,
        quote_from: String,
        scope_from: String,
        cover_from: String,
    },
    /// E-mails an approved proposal to the client, its PDF attached, once
    /// (keyed on the run); declare `effects = ["client communications"]`.
    #[serde(rename = "send_proposal")]
    SendProposal {
        proposal_from: String,
        approved_from: String,
    },
    /// DIGEST: every number of the digest, SQL aggregates for the local
    /// day before the run's time; see [`crate::digest`].
    #[serde(rename = "digest_numbers")]
    DigestNumbers,
    /// DIGEST: `template` (a prompt file) rendered with the numbers of
    /// step `from`; never written by a model.
    #[serde(rename = "digest_render")]
    DigestRender { template: String, from: String },
    /// DIGEST: the optional one-paragraph summary of `text_from`'s text
    /// by the fast tier (`digest.summary`), skipped with a sentence when
    /// the budget is short.
    #[serde(rename = "digest_summary")]
    DigestSummary { text_from: String },
    /// DIGEST: sends `text_from`'s text with the chart of `numbers_from`'s
    /// day and each open approval: to the owner for a scheduled run, to
    /// the asking chat otherwise.
    #[serde(rename = "digest_deliver")]
    DigestDeliver {
        text_from: String,
        numbers_from: String,
    },
}

fn fast_tier() -> Tier {
    Tier::Fast
}

fn fact_check_system() -> String {
    "fact_check_system".into()
}

fn fact_check_prompt() -> String {
    "fact_check".into()
}

/// A lead status a step sets must be one leads have.
fn check_status(step: &str, status: Option<&str>) -> Result<(), String> {
    match status {
        Some(status) if crate::leads::LeadStatus::parse(status).is_none() => Err(format!(
            "step '{step}': '{status}' is not a lead status (new, replied, pursuing, won, lost, declined)"
        )),
        _ => Ok(()),
    }
}

fn urgent_by_default() -> bool {
    true
}

impl Flow {
    pub fn needs_model(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.kind,
                StepKind::Generate { .. } | StepKind::FactCheck { .. } | StepKind::Extract { .. }
            )
        })
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Where the run goes after the step at `index` ended with `outcome`:
    /// the target `next` names for it; without `next`, or for an outcome
    /// its map does not name, the following step (the end after the last).
    /// Targets are validated at load; one that is not (a journal from an
    /// edited file) ends the run rather than guessing.
    pub fn route(&self, index: usize, outcome: Option<&str>) -> Target {
        let named = match self.steps.get(index).and_then(|s| s.next.as_ref()) {
            Some(Next::To(target)) => Some(target.as_str()),
            Some(Next::ByOutcome(map)) => outcome.and_then(|o| map.get(o)).map(String::as_str),
            None => None,
        };
        match named {
            Some(END) => Target::End,
            Some(name) => self.step_index(name).map_or(Target::End, Target::Step),
            None if index + 1 < self.steps.len() => Target::Step(index + 1),
            None => Target::End,
        }
    }

    /// Whether the step's `next` names this outcome explicitly (an approve
    /// step's rejection ends the run unless its `next` names `rejected`).
    pub fn names_outcome(&self, step: &str, outcome: &str) -> bool {
        let next = self
            .step_index(step)
            .and_then(|i| self.steps[i].next.as_ref());
        matches!(next, Some(Next::ByOutcome(map)) if map.contains_key(outcome))
    }

    /// Every `next` target is a step of this flow or `"end"`; no step is
    /// called `"end"`.
    fn validate_targets(&self) -> Result<(), String> {
        for step in &self.steps {
            if step.name == END {
                return Err(format!(
                    "a step may not be called '{END}': `next = \"{END}\"` completes the run"
                ));
            }
            let targets: Vec<(Option<&str>, &str)> = match &step.next {
                None => Vec::new(),
                Some(Next::To(target)) => vec![(None, target.as_str())],
                Some(Next::ByOutcome(map)) => map
                    .iter()
                    .map(|(outcome, target)| (Some(outcome.as_str()), target.as_str()))
                    .collect(),
            };
            for (outcome, target) in targets {
                if target == END || self.step_index(target).is_some() {
                    continue;
                }
                let on = outcome
                    .map(|o| format!(" on outcome '{o}'"))
                    .unwrap_or_default();
                return Err(format!(
                    "step '{}' goes next{on} to '{target}', which is not a step of this flow (nor \"{END}\")",
                    step.name
                ));
            }
        }
        Ok(())
    }

    /// Steps no route reaches from the first (allowed: a draft flow may
    /// keep a step for later), for a warning at load.
    pub fn unreachable_steps(&self) -> Vec<&str> {
        let mut seen = vec![false; self.steps.len()];
        let mut todo = vec![0];
        while let Some(index) = todo.pop() {
            if index >= self.steps.len() || std::mem::replace(&mut seen[index], true) {
                continue;
            }
            let mut outcomes: Vec<Option<&str>> = vec![None];
            if let Some(Next::ByOutcome(map)) = &self.steps[index].next {
                outcomes.extend(map.keys().map(|k| Some(k.as_str())));
            }
            for outcome in outcomes {
                if let Target::Step(next) = self.route(index, outcome) {
                    todo.push(next);
                }
            }
        }
        self.steps
            .iter()
            .zip(seen)
            .filter(|(_, seen)| !seen)
            .map(|(step, _)| step.name.as_str())
            .collect()
    }

    /// Step names are unique, references point to earlier steps, prompts
    /// exist.
    fn validate(&self, prompts: &Prompts) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("a flow needs at least one step".into());
        }
        if let Some(schedule) = &self.schedule {
            schedule.validate()?;
        }
        self.validate_targets()?;
        for (index, step) in self.steps.iter().enumerate() {
            if self.step_index(&step.name) != Some(index) {
                return Err(format!("step name '{}' is used twice", step.name));
            }
            match &step.kind {
                StepKind::Context
                | StepKind::Retrieve { .. }
                | StepKind::Enrich { .. }
                | StepKind::Score { .. } => {}
                StepKind::Extract { system, prompt, .. } => {
                    for name in [system, prompt] {
                        if !prompts.has(name) {
                            return Err(format!(
                                "step '{}' uses prompt '{name}', but there is no prompts/{name}.md",
                                step.name
                            ));
                        }
                    }
                }
                StepKind::Email { status, .. } => check_status(&step.name, status.as_deref())?,
                StepKind::LeadStatus { status } => check_status(&step.name, Some(status))?,
                StepKind::Generate { system, prompt, .. } => {
                    for name in [system, prompt] {
                        if !prompts.has(name) {
                            return Err(format!(
                                "step '{}' uses prompt '{name}', but there is no prompts/{name}.md",
                                step.name
                            ));
                        }
                    }
                }
                StepKind::Quote => {}
                StepKind::Proposal {
                    template,
                    quote_from,
                    scope_from,
                    cover_from,
                } => {
                    if !prompts.has(template) {
                        return Err(format!(
                            "step '{}' uses template '{template}', but there is no prompts/{template}.md",
                            step.name
                        ));
                    }
                    for source in [quote_from, scope_from, cover_from] {
                        if !matches!(self.step_index(source), Some(at) if at < index) {
                            return Err(format!(
                                "step '{}' takes '{source}', which is not an earlier step",
                                step.name
                            ));
                        }
                    }
                }
                StepKind::SendProposal {
                    proposal_from,
                    approved_from,
                } => {
                    for source in [proposal_from, approved_from] {
                        if !matches!(self.step_index(source), Some(at) if at < index) {
                            return Err(format!(
                                "step '{}' takes '{source}', which is not an earlier step",
                                step.name
                            ));
                        }
                    }
                }
                StepKind::Approve {
                    draft_from, labels, ..
                } => match self.step_index(draft_from) {
                    Some(source) if source < index => labels.check(&step.name)?,
                    _ => {
                        return Err(format!(
                            "step '{}' takes its draft from '{draft_from}', which is not an earlier step",
                            step.name
                        ));
                    }
                },
                StepKind::FactCheck {
                    draft_from,
                    system,
                    prompt,
                    ..
                } => {
                    self.earlier(index, draft_from)?;
                    for name in [system, prompt] {
                        if !prompts.has(name) {
                            return Err(format!(
                                "step '{}' uses prompt '{name}', but there is no prompts/{name}.md",
                                step.name
                            ));
                        }
                    }
                }
                StepKind::Publish { text_from } => self.earlier(index, text_from)?,
                StepKind::DigestNumbers => {}
                StepKind::DigestRender { template, from } => {
                    self.earlier(index, from)?;
                    if !prompts.has(template) {
                        return Err(format!(
                            "step '{}' uses template '{template}', but there is no prompts/{template}.md",
                            step.name
                        ));
                    }
                }
                StepKind::DigestSummary { text_from } => self.earlier(index, text_from)?,
                StepKind::DigestDeliver {
                    text_from,
                    numbers_from,
                } => {
                    self.earlier(index, text_from)?;
                    self.earlier(index, numbers_from)?;
                }
            }
            if let Some(compensation) = &step.compensate {
                crate::funnel::check_compensation(step, compensation)?;
            }
            // FUNNEL: Revise must loop back somewhere, or the draft under
            // revision would go on as if approved.
            if matches!(step.kind, StepKind::Approve { revise: true, .. })
                && !self.names_outcome(&step.name, "revise")
            {
                return Err(format!(
                    "step '{}' offers Revise, so its next must name the outcome: next = {{ revise = \"write\" }}",
                    step.name
                ));
            }
        }
        Ok(())
    }

    /// `source` names a step before the one at `index`.
    fn earlier(&self, index: usize, source: &str) -> Result<(), String> {
        match self.step_index(source) {
            Some(at) if at < index => Ok(()),
            _ => Err(format!(
                "step '{}' takes its text from '{source}', which is not an earlier step",
                self.steps[index].name
            )),
        }
    }
}

/// Every flow soloist can run, by name.
#[derive(Debug, Clone)]
pub struct FlowCatalog {
    flows: BTreeMap<String, Flow>,
}

impl FlowCatalog {
    /// The built-in flows, overridden or extended by `<home>/config/flows/*.toml`.
    pub fn load(home: &Path, prompts: &Prompts) -> Result<FlowCatalog, FlowError> {
        let mut sources: BTreeMap<String, (String, String)> = BUILT_IN_FLOWS
            .iter()
            .map(|(name, text)| {
                (
                    name.to_string(),
                    (format!("built-in {name}.toml"), text.to_string()),
                )
            })
            .collect();
        let overrides = read_overrides(&home.join("config/flows"), "toml")
            .map_err(|(path, source)| FlowError::Read { path, source })?;
        for (name, path, text) in overrides {
            sources.insert(name, (path, text));
        }
        let mut flows = BTreeMap::new();
        for (file, text) in sources.values() {
            let flow = Flow::from_str(text).map_err(|message| FlowError::Invalid {
                file: file.clone(),
                message,
            })?;
            flow.validate(prompts)
                .map_err(|message| FlowError::Invalid {
                    file: file.clone(),
                    message,
                })?;
            let unreachable = flow.unreachable_steps();
            if !unreachable.is_empty() {
                tracing::warn!(%file, steps = ?unreachable, "no route reaches these steps");
            }
            flows.insert(flow.name.clone(), flow);
        }
        Ok(FlowCatalog { flows })
    }

    pub fn get(&self, name: &str) -> Option<&Flow> {
        self.flows.get(name)
    }

    /// The flows whose `on` names this event kind.
    pub fn subscribers<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> {
        self.flows
            .values()
            .filter(move |flow| flow.on.as_deref() == Some(kind))
            .map(|flow| flow.name.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.flows.keys().map(String::as_str)
    }
}

/// A file that exists but cannot be read: its path and why.
pub(crate) type Unreadable = (String, std::io::Error);

/// The `*.ext` files of `dir` (none if it does not exist), as (file stem,
/// path, contents): the operator's overrides of built-in flows or prompts.
pub(crate) fn read_overrides(
    dir: &Path,
    ext: &str,
) -> Result<Vec<(String, String, String)>, Unreadable> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| (shown.clone(), source))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        files.push((name, shown, text));
    }
    Ok(files)
}

impl FromStr for Flow {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_draft_flow_loads_and_needs_a_model() {
        let prompts = Prompts::load(Path::new("/nonexistent")).unwrap();
        let catalog = FlowCatalog::load(Path::new("/nonexistent"), &prompts).unwrap();
        let draft = catalog.get("draft").unwrap();
        assert!(draft.needs_model());
        assert_eq!(draft.cost_label, CostLabel::HighQuality);
    }

    #[test]
    fn a_step_of_unknown_kind_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config/flows")).unwrap();
        std::fs::write(
            dir.path().join("config/flows/odd.toml"),
            "name = \"odd\"\ndescription = \"x\"\ncost_label = \"balanced\"\n[[steps]]\nname = \"a\"\nkind = \"teleport\"\n",
        )
        .unwrap();
        let prompts = Prompts::load(dir.path()).unwrap();
        let error = FlowCatalog::load(dir.path(), &prompts)
            .unwrap_err()
            .to_string();
        assert!(error.contains("odd.toml"), "{error}");
        assert!(error.contains("teleport"), "{error}");
    }

    const BRANCHING: &str = "name = \"x\"\ndescription = \"x\"\ncost_label = \"balanced\"\n\
        [[steps]]\nname = \"a\"\nkind = \"context\"\nnext = { hot = \"c\", cold = \"end\" }\n\
        [[steps]]\nname = \"b\"\nkind = \"context\"\n\
        [[steps]]\nname = \"c\"\nkind = \"context\"\nnext = \"a\"\n";

    #[test]
    fn a_route_follows_the_named_outcome_else_the_following_step() {
        let flow: Flow = BRANCHING.parse().unwrap();
        assert_eq!(flow.route(0, Some("hot")), Target::Step(2));
        assert_eq!(flow.route(0, Some("cold")), Target::End);
        assert_eq!(flow.route(0, Some("lukewarm")), Target::Step(1));
        assert_eq!(flow.route(0, None), Target::Step(1));
        assert_eq!(flow.route(1, None), Target::Step(2));
        assert_eq!(flow.route(2, Some("anything")), Target::Step(0));
        assert!(flow.unreachable_steps().is_empty());
    }

    #[test]
    fn a_target_that_is_not_a_step_is_refused_naming_the_step() {
        let flow: Flow = BRANCHING
            .replace("next = \"a\"", "next = \"z\"")
            .parse()
            .unwrap();
        let prompts = Prompts::load(Path::new("/nonexistent")).unwrap();
        let error = flow.validate(&prompts).unwrap_err();
        assert!(error.contains("step 'c' goes next to 'z'"), "{error}");
    }

    #[test]
    fn an_approval_of_a_later_step_is_refused() {
        let text = "name = \"x\"\ndescription = \"x\"\ncost_label = \"balanced\"\n\
                    [[steps]]\nname = \"review\"\nkind = \"approve\"\ndraft_from = \"write\"\nartifact_kind = \"d\"\n";
        let flow: Flow = text.parse().unwrap();
        let prompts = Prompts::load(Path::new("/nonexistent")).unwrap();
        assert!(
            flow.validate(&prompts)
                .unwrap_err()
                .contains("not an earlier step")
        );
    }
}

//! Flows as data. A flow is `config/flows/NAME.toml`: its steps, their
//! prompts (`prompts/*.md`, minijinja templates) and its cost label. The
//! binary carries the built-in flows and prompts; a file of the same name
//! under the home directory overrides one.

mod prompts;

pub use prompts::{PromptError, Prompts};

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

pub use crate::domain::{CostLabel, Tier};

/// Built-in flows, compiled in.
const BUILT_IN_FLOWS: [(&str, &str); 2] = [
    ("draft", include_str!("../../config/flows/draft.toml")),
    ("offer", include_str!("../../config/flows/offer.toml")),
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
    #[serde(flatten)]
    pub kind: StepKind,
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
    },
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
}

fn urgent_by_default() -> bool {
    true
}

impl Flow {
    pub fn needs_model(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::Generate { .. }))
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Step names are unique, references point to earlier steps, prompts
    /// exist.
    fn validate(&self, prompts: &Prompts) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("a flow needs at least one step".into());
        }
        for (index, step) in self.steps.iter().enumerate() {
            if self.step_index(&step.name) != Some(index) {
                return Err(format!("step name '{}' is used twice", step.name));
            }
            match &step.kind {
                StepKind::Context | StepKind::Retrieve { .. } => {}
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
                StepKind::Approve { draft_from, .. } => match self.step_index(draft_from) {
                    Some(source) if source < index => {}
                    _ => {
                        return Err(format!(
                            "step '{}' takes its draft from '{draft_from}', which is not an earlier step",
                            step.name
                        ));
                    }
                },
            }
        }
        Ok(())
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
            flows.insert(flow.name.clone(), flow);
        }
        Ok(FlowCatalog { flows })
    }

    pub fn get(&self, name: &str) -> Option<&Flow> {
        self.flows.get(name)
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

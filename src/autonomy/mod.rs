//! Graduated automation (issue 13): each flow's autonomy level says which
//! of its approvals a person must give.
//!
//! - `always` (the default): every approve step waits for the operator.
//! - `borderline`: only a case an earlier step marked `"uncertain": true`
//!   (a borderline lead, a post with doubtful claims) waits; the others are
//!   approved by autonomy and the operator is told after the fact.
//! - `never`: the flow runs unattended; the operator is told after the fact.
//!
//! A guardrail flag on a draft always brings its approval back, whatever
//! the level. The level comes from settings (`[autonomy] "flow" = "level"`)
//! unless one was set in chat (`/autonomy FLOW LEVEL`), by a graduation
//! (Yes on the digest's proposal, [`graduation`]) or by a drop-back (an
//! edit, revision or rejection lowers a graduated flow one level); each of
//! those, and a level the settings file changed (recorded at start, by
//! [`audit_settings`]), is an audit row in `autonomy_changes`. A skipped approval is
//! journaled as a decision by autonomy, which is what lets a step whose
//! effect `policy.approval_required_for` names run in that flow only.

pub mod command;
pub mod graduation;
pub mod skip;
mod store;

pub use graduation::{
    Proposal, Proposed, answer_in, digest_proposals, drop_back_in, graduation_proposals,
};
pub use skip::{Verdict, decision_lines, verdict};
pub use store::Record;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::domain::{Inbound, Platform};
use crate::store::{Store, StoreResult, Tx};

/// How much of a flow runs without the operator.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Every approval waits for the operator.
    #[default]
    Always,
    /// Only cases the flow marks uncertain wait.
    Borderline,
    /// Nothing waits unless a guardrail flags it.
    Never,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Always, Level::Borderline, Level::Never];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Always => "always",
            Level::Borderline => "borderline",
            Level::Never => "never",
        }
    }

    /// What the level means, for the operator.
    pub fn meaning(self) -> &'static str {
        match self {
            Level::Always => "every approval waits for you",
            Level::Borderline => "only cases the flow marks uncertain wait for you",
            Level::Never => "runs unattended and tells you after",
        }
    }

    /// The next level up, which graduation proposes.
    pub fn raised(self) -> Option<Level> {
        match self {
            Level::Always => Some(Level::Borderline),
            Level::Borderline => Some(Level::Never),
            Level::Never => None,
        }
    }

    /// The next level down, where a drop-back goes.
    pub fn lowered(self) -> Option<Level> {
        match self {
            Level::Always => None,
            Level::Borderline => Some(Level::Always),
            Level::Never => Some(Level::Borderline),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an autonomy level: use always, borderline or never")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_lowercase().as_str() {
            "always" => Ok(Level::Always),
            "borderline" => Ok(Level::Borderline),
            "never" => Ok(Level::Never),
            _ => Err(UnknownLevel(crate::domain::clip(text.trim(), 40))),
        }
    }
}

/// Where a flow's level comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No setting: the default, `always`.
    Default,
    /// `[autonomy]` in the settings file.
    Settings,
    /// Set in chat, by a graduation or by a drop-back (`autonomy_levels`).
    Chat,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Settings => "settings",
            Source::Chat => "chat",
        }
    }
}

/// A flow's level and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLevel {
    pub level: Level,
    pub source: Source,
}

/// The level the settings give `flow`.
fn configured(settings: &Settings, flow: &str) -> FlowLevel {
    match settings.autonomy.get(flow) {
        Some(level) => FlowLevel {
            level: *level,
            source: Source::Settings,
        },
        None => FlowLevel {
            level: Level::Always,
            source: Source::Default,
        },
    }
}

fn effective(settings: &Settings, flow: &str, chat: Option<Level>) -> FlowLevel {
    match chat {
        Some(level) => FlowLevel {
            level,
            source: Source::Chat,
        },
        None => configured(settings, flow),
    }
}

/// `flow`'s level now: the one set in chat wins over the settings.
pub async fn level_of(store: &Store, settings: &Settings, flow: &str) -> StoreResult<FlowLevel> {
    let mut conn = store.reads().acquire().await?;
    let chat = store::chat_level(&mut conn, flow).await?;
    Ok(effective(settings, flow, chat))
}

/// [`level_of`] inside a transaction.
pub async fn level_in(tx: &mut Tx, settings: &Settings, flow: &str) -> StoreResult<FlowLevel> {
    let chat = store::chat_level(tx.conn(), flow).await?;
    Ok(effective(settings, flow, chat))
}

/// Sets `flow`'s level and writes the audit row, in the caller's
/// transaction.
pub async fn set_level_in(tx: &mut Tx, change: Change<'_>) -> StoreResult<()> {
    store::set_level(tx.conn(), &change).await
}

/// One change of a flow's level, as its audit row records it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub flow: &'a str,
    pub from: Level,
    pub to: Level,
    pub by: &'a str,
    pub reason: &'a str,
}

/// The last (up to) 20 human decisions on `flow`'s approvals.
pub async fn record_of(store: &Store, flow: &str) -> StoreResult<Record> {
    let mut conn = store.reads().acquire().await?;
    store::recent_decisions(&mut conn, flow, None).await
}

/// Audits a level the settings file changed since the last start: a flow
/// with no level set in chat whose configured level differs from its
/// last audit row's (`always` with none) gets a row by `settings`. Run at
/// start, so a level raised by editing the file is on record too.
pub async fn audit_settings(store: &Store, settings: &Settings) -> StoreResult<()> {
    let mut tx = store.begin().await?;
    let mut flows: Vec<String> = settings.autonomy.keys().cloned().collect();
    flows.extend(store::audited_flows(tx.conn()).await?);
    flows.sort();
    flows.dedup();
    for flow in &flows {
        if store::chat_level(tx.conn(), flow).await?.is_some() {
            continue;
        }
        let recorded = store::last_recorded(tx.conn(), flow)
            .await?
            .unwrap_or_default();
        let configured = configured(settings, flow).level;
        if recorded != configured {
            let change = Change {
                flow,
                from: recorded,
                to: configured,
                by: "settings",
                reason: "the settings file ([autonomy]) changed",
            };
            store::record_change(tx.conn(), &change).await?;
        }
    }
    tx.commit().await
}

/// Whether the person may change autonomy levels: the owner (the
/// terminal is the owner's).
pub fn is_owner(settings: &Settings, inbound: &Inbound) -> bool {
    inbound.chat.platform == Platform::Console
        || settings
            .owner
            .is_owner(inbound.chat.platform, &inbound.user_id)
}

/// Settings that name a flow the catalog does not have: a sentence
/// naming it, so a typo stops the start instead of leaving a flow waiting.
pub fn check_settings<'a>(
    settings: &Settings,
    mut flows: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    let known: Vec<&str> = flows.by_ref().collect();
    match settings
        .autonomy
        .keys()
        .find(|flow| !known.contains(&flow.as_str()))
    {
        Some(flow) => Err(format!(
            "[autonomy] names the flow '{flow}', which does not exist (flows: {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_from_their_names_in_any_case_and_nothing_else() {
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>().unwrap(), level);
        }
        assert_eq!(" NEVER ".parse::<Level>().unwrap(), Level::Never);
        let error = "sometimes".parse::<Level>().unwrap_err().to_string();
        assert!(
            error.contains("'sometimes'") && error.contains("always, borderline or never"),
            "{error}"
        );
    }

    #[test]
    fn graduation_goes_up_one_level_and_a_drop_back_down_one() {
        assert_eq!(Level::Always.raised(), Some(Level::Borderline));
        assert_eq!(Level::Borderline.raised(), Some(Level::Never));
        assert_eq!(Level::Never.raised(), None);
        assert_eq!(Level::Never.lowered(), Some(Level::Borderline));
        assert_eq!(Level::Borderline.lowered(), Some(Level::Always));
        assert_eq!(Level::Always.lowered(), None);
    }

    #[test]
    fn a_level_set_in_chat_wins_over_the_settings() {
        let mut settings = Settings::load(&crate::config::LoadOptions::default()).unwrap();
        assert_eq!(
            effective(&settings, "draft", None),
            FlowLevel {
                level: Level::Always,
                source: Source::Default
            }
        );
        settings.autonomy.insert("draft".into(), Level::Never);
        assert_eq!(effective(&settings, "draft", None).source, Source::Settings);
        assert_eq!(
            effective(&settings, "draft", Some(Level::Borderline)),
            FlowLevel {
                level: Level::Borderline,
                source: Source::Chat
            }
        );
    }

    #[test]
    fn settings_naming_an_unknown_flow_are_refused_with_the_known_ones() {
        let mut settings = Settings::load(&crate::config::LoadOptions::default()).unwrap();
        settings.autonomy.insert("drafts".into(), Level::Never);
        let error = check_settings(&settings, ["draft", "post"].into_iter()).unwrap_err();
        assert!(
            error.contains("'drafts'") && error.contains("draft, post"),
            "{error}"
        );
    }
}

//! Model tiers and flow cost labels: names the flows, the settings and the
//! model router share.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much model a call gets. Each tier names an ordered fallback chain of
/// models in the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Router,
    Fast,
    Quality,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Router => "router",
            Tier::Fast => "fast",
            Tier::Quality => "quality",
        }
    }

    /// The next cheaper tier, used when a budget policy downgrades a call.
    pub fn cheaper(self) -> Option<Tier> {
        match self {
            Tier::Quality => Some(Tier::Fast),
            Tier::Fast | Tier::Router => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flow's spending posture; the settings map each label to a policy
/// (tier cap, token limits, retries, caching, what to do at the budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostLabel {
    LowCost,
    Balanced,
    HighQuality,
}

impl CostLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            CostLabel::LowCost => "low-cost",
            CostLabel::Balanced => "balanced",
            CostLabel::HighQuality => "high-quality",
        }
    }
}

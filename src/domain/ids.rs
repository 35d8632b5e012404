//! Ids as newtypes over random UUIDs (v4, so their first characters differ
//! and a short prefix is enough to name one in chat).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not an id")]
pub struct IdError(pub String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
            }

            /// The first eight hex digits, for people.
            pub fn short(&self) -> String {
                self.0.simple().to_string()[..8].to_string()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map($name).map_err(|_| IdError(s.to_string()))
            }
        }
    };
}

id_type!(
    /// One execution of a flow.
    RunId
);
id_type!(
    /// One request for a decision on a draft.
    ApprovalId
);
id_type!(
    /// A stored result: an approved or rejected draft.
    ArtifactId
);

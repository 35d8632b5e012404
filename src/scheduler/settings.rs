//! `[scheduler]` and `[schedules.NAME]` settings.

use std::str::FromStr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerSettings {
    /// How often due schedules are checked.
    pub tick_secs: u64,
    /// A tick handled this long after its time still counts as on time;
    /// later, the schedule's catch-up policy decides.
    pub grace_secs: u64,
    /// Fire and miss rows older than this are forgotten by the
    /// `prune_schedule_history` job.
    pub keep_history_days: u32,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            tick_secs: 15,
            grace_secs: 300,
            keep_history_days: 7,
        }
    }
}

/// What to do with ticks missed while no process ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// One late run for all of them.
    #[default]
    Once,
    /// None; the miss is reported.
    Skip,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Once => "once",
            CatchUp::Skip => "skip",
        }
    }
}

impl FromStr for CatchUp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "once" => Ok(CatchUp::Once),
            "skip" => Ok(CatchUp::Skip),
            other => Err(format!("catch_up is 'once' or 'skip', not '{other}'")),
        }
    }
}

/// One `[schedules.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleConfig {
    /// Six fields, seconds first: "0 0 8 * * *" is 08:00 every day.
    pub cron: String,
    /// Empty: the business's time zone.
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A built-in job or a flow; empty: the schedule's name.
    #[serde(default)]
    pub target: String,
    /// The request a flow target starts with.
    #[serde(default)]
    pub input: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl ScheduleConfig {
    pub fn timezone_or(&self, business: &str) -> String {
        if self.timezone.trim().is_empty() {
            business.to_string()
        } else {
            self.timezone.clone()
        }
    }

    pub fn target<'a>(&'a self, name: &'a str) -> &'a str {
        if self.target.trim().is_empty() {
            name
        } else {
            &self.target
        }
    }
}

/// A flow file's own schedule, one line or a table:
///
/// ```toml
/// schedule = "0 0 9 * * Mon"
/// schedule = { cron = "0 0 9 * * Mon", timezone = "Europe/Lisbon", catch_up = "skip", input = "this week" }
/// ```
///
/// At start it becomes (or updates) the schedule row named like the flow,
/// whose ticks start the flow ([`super::Scheduler::sync_config`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FlowSchedule {
    Cron(String),
    Table(FlowScheduleTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowScheduleTable {
    pub cron: String,
    /// Empty: the business's time zone.
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The request each run starts with.
    #[serde(default)]
    pub input: String,
}

impl FlowSchedule {
    /// The schedule as a table (the one-line form has the defaults).
    pub fn table(&self) -> FlowScheduleTable {
        match self {
            FlowSchedule::Cron(cron) => FlowScheduleTable {
                cron: cron.clone(),
                timezone: String::new(),
                catch_up: CatchUp::default(),
                input: String::new(),
            },
            FlowSchedule::Table(table) => table.clone(),
        }
    }

    /// The cron expression and the zone (when named) are valid; checked
    /// when flows load, so a bad schedule stops soloist at start with the
    /// file named.
    pub fn validate(&self) -> Result<(), String> {
        let table = self.table();
        let timezone = if table.timezone.trim().is_empty() {
            "UTC"
        } else {
            table.timezone.trim()
        };
        super::Timetable::parse(&table.cron, timezone)
            .map(|_| ())
            .map_err(|error| format!("schedule: {error}"))
    }
}

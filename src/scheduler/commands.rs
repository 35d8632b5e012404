//! `/schedules`, `/schedule NAME HH:MM` and the pause / resume
//! buttons. The controller's handlers (`controller/schedules.rs`) call
//! these; replies go back as messages.

use chrono::{TimeZone, Utc};
use std::fmt::Write;

use super::{Clock, DatabaseClock, Timetable};
use crate::domain::{Action, Outbound, action_buttons};
use crate::store::{ScheduleRow, Store, StoreError, Tx};

/// `/schedules`: each schedule, its next fire time, and a pause or resume
/// button.
pub async fn list(store: &Store) -> Result<Vec<Outbound>, StoreError> {
    let schedules = store.schedules().await?;
    if schedules.is_empty() {
        return Ok(vec![Outbound::text(
            "No schedules yet: soloist run writes the ones in the config file ([schedules.NAME]).",
        )]);
    }
    let now = DatabaseClock(store.clone()).now().await?;
    let mut text = String::from("Schedules:");
    let mut choices = Vec::new();
    for schedule in &schedules {
        let _ = write!(text, "\n{}", describe(schedule, now));
        let (label, action) = if schedule.paused {
            (
                format!("Resume {}", schedule.name),
                Action::SetSchedulePaused {
                    name: schedule.name.clone(),
                    paused: false,
                },
            )
        } else {
            (
                format!("Pause {}", schedule.name),
                Action::SetSchedulePaused {
                    name: schedule.name.clone(),
                    paused: true,
                },
            )
        };
        choices.push((label, action));
    }
    text.push_str("\nChange a time with /schedule NAME HH:MM.");
    let (buttons, actions) = action_buttons(choices);
    store.create_actions(&actions).await?;
    Ok(vec![Outbound::text(text).with_buttons(buttons)])
}

fn describe(schedule: &ScheduleRow, now: chrono::DateTime<Utc>) -> String {
    let state = if schedule.paused { ", paused" } else { "" };
    let next = match Timetable::parse(&schedule.cron, &schedule.timezone) {
        Err(error) => format!("invalid: {error}"),
        Ok(_) if schedule.paused => "not until resumed".to_string(),
        Ok(table) => {
            let at = schedule
                .next_fire_at
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .or_else(|| table.next_after(now).map(|t| t.at));
            at.map(|at| {
                at.with_timezone(&table.timezone())
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_else(|| "never".into())
        }
    };
    format!(
        "{} ({}, cron \"{}\", {}, catch-up {}{state}): next {next}",
        schedule.name, schedule.target, schedule.cron, schedule.timezone, schedule.catch_up
    )
}

/// `/schedule NAME HH:MM` (or `/schedule NAME` followed by a six-field cron
/// expression).
pub async fn change(store: &Store, args: &str) -> Result<String, StoreError> {
    let usage = "Use /schedule NAME HH:MM, e.g. /schedule digest 07:30 (or a six-field cron expression after the name).";
    let Some((name, when)) = args.trim().split_once(char::is_whitespace) else {
        return Ok(usage.into());
    };
    let Some(schedule) = store.schedule_named(name).await? else {
        return Ok(format!(
            "There is no schedule named '{name}'. /schedules lists them."
        ));
    };
    let Some(cron) = new_cron(&schedule.cron, when.trim()) else {
        return Ok(usage.into());
    };
    let table = match Timetable::parse(&cron, &schedule.timezone) {
        Ok(table) => table,
        Err(error) => return Ok(error.to_string()),
    };
    store
        .set_schedule_cron(name, &cron, Utc::now().timestamp_millis())
        .await?;
    let now = DatabaseClock(store.clone()).now().await?;
    let next = table
        .next_after(now)
        .map(|t| {
            t.at.with_timezone(&table.timezone())
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_else(|| "never".into());
    Ok(format!("{name} now runs on \"{cron}\"; next: {next}."))
}

/// HH:MM replaces the time fields of `current` (its days stay); six or
/// seven fields replace it whole.
fn new_cron(current: &str, when: &str) -> Option<String> {
    if when.split_whitespace().count() >= 6 {
        return Some(when.to_string());
    }
    let (hour, minute) = when.split_once(':')?;
    let (hour, minute): (u32, u32) = (hour.parse().ok()?, minute.parse().ok()?);
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut fields: Vec<String> = current.split_whitespace().map(String::from).collect();
    if fields.len() < 6 {
        fields = "0 0 0 * * *".split(' ').map(String::from).collect();
    }
    fields[0] = "0".into();
    fields[1] = minute.to_string();
    fields[2] = hour.to_string();
    Some(fields.join(" "))
}

/// The pause / resume buttons, inside the press's transaction (so the
/// press is used, the schedule changed and the update marked handled
/// together). `now_ms` is the database's clock, read before the
/// transaction opened (on SQLite the transaction holds the one connection).
pub async fn set_paused_in(
    tx: &mut Tx,
    name: &str,
    paused: bool,
    now_ms: i64,
) -> Result<String, StoreError> {
    Ok(if !tx.set_schedule_paused(name, paused, now_ms).await? {
        format!("There is no schedule named '{name}'.")
    } else if paused {
        format!("{name} is paused. /schedules has the button to resume it.")
    } else {
        format!("{name} is running again; ticks while it was paused are not caught up.")
    })
}

#[cfg(test)]
mod tests {
    use super::new_cron;

    #[test]
    fn a_time_replaces_the_time_fields_and_keeps_the_days() {
        assert_eq!(
            new_cron("0 0 8 * * Mon-Fri", "07:30").as_deref(),
            Some("0 30 7 * * Mon-Fri")
        );
        assert_eq!(new_cron("0 0 8 * * *", "25:00"), None);
        assert_eq!(
            new_cron("0 0 8 * * *", "0 15 6 * * *").as_deref(),
            Some("0 15 6 * * *")
        );
    }
}

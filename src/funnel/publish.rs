//! The `publish` step kind, the publisher that posts due publications, and
//! the `retract` compensation.
//!
//! Once, across restarts and processes: the step only records the
//! publications (in the transaction that completes it); a post goes out
//! when [`publish_due`] claims its row (`scheduled` -> `sending`, one
//! claimant) and is recorded `published` with its message id right after
//! the platform answered. The one window left is between that answer and
//! that record: a process dying there leaves a `sending` row whose claim
//! lapses, and the next claimant posts it again (at least once, never lost).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::json;

use super::platforms::{self, PlatformError};
use crate::config::Settings;
use crate::domain::{
    Action, InputPurpose, JournalEvent, Outbound, RunId, RunStatus, action_buttons,
};
use crate::engine::{Engine, RunState, Transition, completed, failed};
use crate::flows::{FlowCatalog, StepDef};
use crate::store::{NewPublication, Publication, RunRow, Store, StoreError};

/// How long a publisher holds a claimed post while it sends it.
const SEND_LEASE_MS: i64 = 2 * 60 * 1000;

/// The `publish` step: asks when, then records the publications.
pub fn publish_step(
    engine: &Engine,
    run: &RunRow,
    step: &StepDef,
    state: &RunState,
    text_from: &str,
) -> Transition {
    let settings = engine.settings();
    // A Revise must loop back to the writing step (`next = { revise = … }`
    // in the flow file); publishing the text under revision would be wrong.
    let under_revision = state
        .outputs
        .get(text_from)
        .and_then(|o| o.get("outcome"))
        .and_then(|o| o.as_str())
        == Some("revise");
    if under_revision {
        return failed(
            run,
            &step.name,
            format!(
                "step '{text_from}' asked for a revision, but the flow does not loop back to rewrite"
            ),
            "Give the approve step next = { revise = \"write\", … } in the flow file.",
        );
    }
    let zone: Tz = settings.business.timezone.parse().unwrap_or(chrono_tz::UTC);
    match state.conversation(&step.name).latest {
        None => ask_when(run, step, &zone, None),
        Some(JournalEvent::InputReceived {
            purpose: InputPurpose::PublishTime,
            text,
            ..
        }) => {
            if text.trim().eq_ignore_ascii_case("pick") {
                return ask_when(
                    run,
                    step,
                    &zone,
                    Some("Send the date and time, e.g. 2026-12-03 14:30."),
                );
            }
            match parse_when(&text, Utc::now(), zone) {
                Ok(due) => schedule(settings, run, step, state, text_from, due, zone),
                Err(problem) => ask_when(run, step, &zone, Some(&problem)),
            }
        }
        Some(other) => failed(
            run,
            &step.name,
            format!(
                "unexpected journal event '{}' while asking when to publish",
                other.name()
            ),
            "This is a bug; please report it with `soloist replay`.",
        ),
    }
}

/// Waits for the time: four buttons, or a typed time.
fn ask_when(run: &RunRow, step: &StepDef, zone: &Tz, problem: Option<&str>) -> Transition {
    let mut transition = Transition::new(RunStatus::WaitingInput);
    transition.waiting_for = Some(InputPurpose::PublishTime);
    transition.events.push(JournalEvent::InputRequested {
        step: step.name.clone(),
        purpose: InputPurpose::PublishTime,
    });
    let choice = |label: &str, when: &str| {
        (
            label.to_string(),
            Action::PublishWhen {
                run_id: run.id,
                when: when.to_string(),
            },
        )
    };
    let (buttons, tokens) = action_buttons(vec![
        choice("Publish now", "now"),
        choice("Tomorrow 09:00", "tomorrow 09:00"),
        choice("Monday 09:00", "monday 09:00"),
        choice("Pick a time", "pick"),
    ]);
    transition.actions = tokens;
    let text = match problem {
        Some(problem) => format!(
            "{problem} When should run {} go out? Times are {zone}.",
            run.id.short()
        ),
        None => format!(
            "When should run {} go out? Times are {zone}; you can also type one (2026-12-03 14:30).",
            run.id.short()
        ),
    };
    transition
        .messages
        .push(Outbound::text(text).with_buttons(buttons));
    transition
}

fn schedule(
    settings: &Settings,
    run: &RunRow,
    step: &StepDef,
    state: &RunState,
    text_from: &str,
    due: DateTime<Utc>,
    zone: Tz,
) -> Transition {
    let targets = match settings.publish.parsed() {
        Ok(targets) if !targets.is_empty() => targets,
        Ok(_) => {
            return failed(
                run,
                &step.name,
                "no publishing channel is configured".into(),
                "Add publish.targets (telegram:<channel id> or discord:<channel id>) to the settings.",
            );
        }
        Err(problem) => return failed(run, &step.name, problem, "Fix publish.targets."),
    };
    let text = state
        .outputs
        .get(text_from)
        .and_then(|o| o.get("text"))
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    let local = due
        .with_timezone(&zone)
        .format("%a %-d %b %H:%M")
        .to_string();
    let names: Vec<String> = targets.iter().map(|(p, c)| format!("{p} {c}")).collect();
    let mut transition = completed(
        &step.name,
        json!({
            "outcome": "scheduled",
            "due_at": due.timestamp_millis(),
            "due_local": format!("{local} {zone}"),
            "targets": names,
        }),
    );
    transition.publications = targets
        .into_iter()
        .map(|(platform, channel_id)| NewPublication {
            id: uuid::Uuid::new_v4().simple().to_string(),
            step: step.name.clone(),
            platform,
            channel_id,
            text: text.to_string(),
            due_at: due.timestamp_millis(),
            notify: run.chat.clone(),
        })
        .collect();
    let short = run.id.short();
    let (buttons, tokens) =
        action_buttons(vec![("Retract".into(), Action::Retract { run_id: run.id })]);
    transition.actions = tokens;
    transition.messages.push(
        Outbound::text(format!(
            "Run {short} goes out {local} ({zone}) to {}. /retract {short} cancels it.",
            names.join(", ")
        ))
        .with_buttons(buttons),
    );
    transition
}

/// When a post should go out: `now`, `tomorrow HH:MM`, `monday HH:MM`
/// (any weekday: the next one), `YYYY-MM-DD HH:MM` or `HH:MM` (the next
/// such time), in `zone`. A time that has passed is refused.
pub fn parse_when(text: &str, now: DateTime<Utc>, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim().to_lowercase();
    if text == "now" {
        return Ok(now);
    }
    let today = now.with_timezone(&zone).date_naive();
    let (day, time) = match text.rsplit_once(' ') {
        Some((day, time)) => (Some(day.trim()), time),
        None => (None, text.as_str()),
    };
    let time = NaiveTime::parse_from_str(time, "%H:%M").map_err(|_| {
        format!(
            "I could not read '{text}' as a time (like 'tomorrow 09:00' or '2026-12-03 14:30')."
        )
    })?;
    let date = match day {
        None => {
            let at = local(zone, today, time)?;
            if at > now {
                return Ok(at);
            }
            today + Duration::days(1)
        }
        Some("today") => today,
        Some("tomorrow") => today + Duration::days(1),
        Some(day) => match day.parse::<Weekday>() {
            Ok(weekday) => {
                let ahead = (7 + weekday.num_days_from_monday() as i64
                    - today.weekday().num_days_from_monday() as i64)
                    % 7;
                today + Duration::days(if ahead == 0 { 7 } else { ahead })
            }
            Err(_) => NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
                format!("I could not read '{day}' as a day (tomorrow, monday, 2026-12-03).")
            })?,
        },
    };
    let at = local(zone, date, time)?;
    if at < now - Duration::minutes(1) {
        return Err(format!("{text} has passed."));
    }
    Ok(at)
}

fn local(zone: Tz, date: NaiveDate, time: NaiveTime) -> Result<DateTime<Utc>, String> {
    zone.from_local_datetime(&date.and_time(time))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{date} {time} does not exist in {zone} (a clock change)."))
}

/// After a step's commit: when it scheduled a post due now ("Publish
/// now"), the post goes out at once instead of at the next `publish_posts`
/// tick. The same claim as the schedule's, so still once across processes;
/// a failure here is logged and leaves the post to the schedule.
pub async fn publish_at_once(engine: &Engine, transition: &Transition) {
    if transition.publications.is_empty() {
        return;
    }
    // The database's clock, as the schedule's: a send lease taken by this
    // process's clock could look expired to a process whose clock is behind.
    let clock = crate::scheduler::DatabaseClock(engine.store().clone());
    let now = match crate::scheduler::Clock::now(&clock).await {
        Ok(now) => now,
        Err(error) => {
            tracing::warn!(error = ?error, "publishing now failed; the publish_posts schedule tries again");
            return;
        }
    };
    let due_now = transition
        .publications
        .iter()
        .any(|p| p.due_at <= now.timestamp_millis());
    if !due_now {
        return;
    }
    if let Err(error) = publish_due(engine.store(), engine.settings(), now).await {
        tracing::warn!(error = ?error, "publishing now failed; the publish_posts schedule tries again");
    }
}

/// Posts every publication due at `now`, each once; returns how many went
/// out. A platform that refuses marks the post failed and says so; one
/// that cannot be reached leaves it due for the next tick.
pub async fn publish_due(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let now_ms = now.timestamp_millis();
    let mut published = 0;
    while let Some(publication) = store.claim_due_publication(now_ms, SEND_LEASE_MS).await? {
        let sent = platforms::post(
            settings,
            publication.platform,
            &publication.channel_id,
            &publication.text,
        )
        .await;
        match sent {
            Ok(message_id) => {
                if record_published(store, &publication, &message_id, now_ms).await? {
                    published += 1;
                }
            }
            Err(error) if error.is_refusal() => record_refused(store, &publication, &error).await?,
            Err(error) => {
                tracing::warn!(publication = %publication.id, %error, "publishing failed; trying again next tick");
                store.release_publication(&publication.id).await?;
                break;
            }
        }
    }
    Ok(published)
}

async fn record_published(
    store: &Store,
    publication: &Publication,
    message_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    if !tx
        .mark_published(&publication.id, message_id, now_ms)
        .await?
    {
        // Another publisher took over after this one's lease lapsed.
        tx.rollback().await?;
        return Ok(false);
    }
    let short = publication.run_id.short();
    let (buttons, tokens) = action_buttons(vec![(
        "Retract".into(),
        Action::Retract {
            run_id: publication.run_id,
        },
    )]);
    tx.insert_actions(&tokens).await?;
    let message = Outbound::text(format!(
        "Published run {short} to {} {}. /retract {short} takes it down.",
        publication.platform, publication.channel_id
    ))
    .with_buttons(buttons);
    tx.enqueue(&publication.notify, Some(publication.run_id), &message)
        .await?;
    // Flows with `on = "post.published"` start from this, once per post.
    let payload = json!({
        "run_id": publication.run_id.to_string(),
        "platform": publication.platform.as_str(),
        "channel_id": publication.channel_id,
        "message_id": message_id,
        "text": publication.text,
    });
    crate::store::events::emit_in(
        &mut tx,
        "post.published",
        payload,
        &format!("post.published:{}", publication.id),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(run = %publication.run_id, platform = %publication.platform, "published");
    Ok(true)
}

async fn record_refused(
    store: &Store,
    publication: &Publication,
    error: &PlatformError,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    if tx
        .mark_publication_failed(&publication.id, &error.to_string())
        .await?
    {
        let message = Outbound::text(format!(
            "Run {} was not published to {} {}: {error}.",
            publication.run_id.short(),
            publication.platform,
            publication.channel_id
        ));
        tx.enqueue(&publication.notify, Some(publication.run_id), &message)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs the compensations the run's flow declares (`compensate = "retract"`
/// on its publish steps): deletes what was posted, cancels what was not
/// posted yet, journals each, and says what happened, failures included.
pub async fn retract(
    engine: &Engine,
    flows: &FlowCatalog,
    run_id: RunId,
    by: &str,
) -> Result<String, StoreError> {
    let store = engine.store();
    let short = run_id.short();
    let events = store.journal(run_id).await?;
    let Some(JournalEvent::Started { flow, .. }) = events.first() else {
        return Ok(format!("Run {short} has no history."));
    };
    let Some(flow) = flows.get(flow) else {
        return Ok(format!(
            "Run {short}'s flow '{flow}' no longer exists; nothing to undo."
        ));
    };
    let compensated: Vec<(&str, &str)> = flow
        .steps
        .iter()
        .rev()
        .filter_map(|s| Some((s.name.as_str(), s.compensate.as_deref()?)))
        .collect();
    if compensated.is_empty() {
        return Ok(format!(
            "Run {short}'s flow declares no compensation; there is nothing to undo."
        ));
    }
    let publications = store.publications_for_run(run_id).await?;
    let mut lines = Vec::new();
    let mut journal = Vec::new();
    for (step, compensation) in compensated {
        for publication in publications.iter().filter(|p| p.step == step) {
            let (ok, line) = retract_one(engine, publication).await?;
            journal.push(JournalEvent::Compensated {
                step: step.to_string(),
                compensation: compensation.to_string(),
                ok,
                detail: line.clone(),
                by: by.to_string(),
            });
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return Ok(format!(
            "Run {short} has published nothing; there is nothing to retract."
        ));
    }
    let mut tx = store.begin().await?;
    tx.append_events(run_id, &journal).await?;
    tx.commit().await?;
    Ok(format!("Run {short}: {}", lines.join(" ")))
}

/// Undoes one publication: (whether it worked, what to tell the operator).
async fn retract_one(
    engine: &Engine,
    publication: &Publication,
) -> Result<(bool, String), StoreError> {
    let store = engine.store();
    let settings = engine.settings();
    let place = format!("{} {}", publication.platform, publication.channel_id);
    match publication.status.as_str() {
        "scheduled" => {
            let mut tx = store.begin().await?;
            let cancelled = tx.cancel_publication(&publication.id).await?;
            tx.commit().await?;
            Ok(if cancelled {
                (
                    true,
                    format!("the post scheduled for {place} is cancelled; it will not go out."),
                )
            } else {
                (
                    false,
                    format!(
                        "the post to {place} is going out right now; send /retract again in a minute."
                    ),
                )
            })
        }
        "sending" => Ok((
            false,
            format!("the post to {place} is going out right now; send /retract again in a minute."),
        )),
        "published" => {
            let message_id = publication.message_id.clone().unwrap_or_default();
            let deleted = platforms::delete(
                settings,
                publication.platform,
                &publication.channel_id,
                &message_id,
            )
            .await;
            let (how, line) = match deleted {
                Ok(()) => ("deleted", format!("the post on {place} is deleted.")),
                Err(error)
                    if publication.platform == crate::domain::Platform::Telegram
                        && error.is_refusal() =>
                {
                    match platforms::replace_with_note(
                        settings,
                        &publication.channel_id,
                        &message_id,
                    )
                    .await
                    {
                        Ok(()) => (
                            "replaced by a retraction note",
                            format!(
                                "Telegram would not delete the post on {place} ({error}; a bot may delete only within 48 hours), so its text now reads \"{}\".",
                                platforms::RETRACTION_NOTE
                            ),
                        ),
                        Err(second) => return Ok(failed_retraction(&place, &second)),
                    }
                }
                Err(error) => return Ok(failed_retraction(&place, &error)),
            };
            let mut tx = store.begin().await?;
            tx.mark_retracted(&publication.id, how).await?;
            tx.commit().await?;
            Ok((true, line))
        }
        "cancelled" | "retracted" => {
            Ok((true, format!("the post to {place} was already retracted.")))
        }
        _ => Ok((true, format!("the post to {place} was never published."))),
    }
}

fn failed_retraction(place: &str, error: &PlatformError) -> (bool, String) {
    tracing::warn!(%place, %error, "a retraction failed");
    (
        false,
        format!(
            "could NOT retract the post on {place}: {error}. It is still up; remove it by hand or try /retract again."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_are_read_in_the_operators_zone() {
        let zone: Tz = "Europe/Lisbon".parse().unwrap();
        // A Wednesday, 10:00 in Lisbon (UTC+0 in winter).
        let now = at("2026-12-02T10:00:00Z");
        assert_eq!(parse_when("now", now, zone).unwrap(), now);
        assert_eq!(
            parse_when("tomorrow 09:00", now, zone).unwrap(),
            at("2026-12-03T09:00:00Z")
        );
        assert_eq!(
            parse_when("Monday 09:00", now, zone).unwrap(),
            at("2026-12-07T09:00:00Z")
        );
        assert_eq!(
            parse_when("2026-12-24 18:30", now, zone).unwrap(),
            at("2026-12-24T18:30:00Z")
        );
        assert_eq!(
            parse_when("09:30", now, zone).unwrap(),
            at("2026-12-03T09:30:00Z")
        );
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            parse_when("tomorrow 09:00", now, berlin).unwrap(),
            at("2026-12-03T08:00:00Z")
        );
        assert!(
            parse_when("2026-12-01 09:00", now, zone)
                .unwrap_err()
                .contains("passed")
        );
        assert!(parse_when("soonish", now, zone).is_err());
    }
}

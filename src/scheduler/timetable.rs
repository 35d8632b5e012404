//! When a schedule's ticks fall: a cron expression (six or seven fields,
//! seconds first) read in a named time zone.
//!
//! cron alone gets daylight-saving days wrong for a once-a-day job: a 01:30
//! Lisbon job is skipped on the spring-forward day (01:30 does not exist)
//! and fires twice on the fall-back day (01:30 happens twice). A schedule
//! whose second, minute and hour are single values fires at most once a
//! local day, so it is walked day by day instead: a time that does not
//! exist moves forward by the gap (01:30 → 02:30), a time that happens
//! twice fires at its first occurrence, and each tick carries its local date
//! so the store can refuse a second fire on the same date.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error(
        "'{expression}' is not a cron expression soloist understands ({reason}); use six fields, seconds first, e.g. \"0 0 8 * * *\" for 08:00 every day"
    )]
    Cron { expression: String, reason: String },
    #[error("'{0}' is not a time zone name (e.g. Europe/Lisbon)")]
    TimeZone(String),
}

/// One tick: the instant, and for once-a-day schedules the local date it
/// belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub at: DateTime<Utc>,
    pub local_date: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct Timetable {
    schedule: cron::Schedule,
    timezone: Tz,
    /// Set when the schedule fires at most once a local day.
    daily_at: Option<NaiveTime>,
}

/// How far the day-by-day walk looks for a matching date (a Feb 29 job
/// waits up to eight years).
const MAX_DAYS: i64 = 366 * 8 + 2;

impl Timetable {
    pub fn parse(expression: &str, timezone: &str) -> Result<Timetable, TimetableError> {
        let schedule =
            cron::Schedule::from_str(expression.trim()).map_err(|e| TimetableError::Cron {
                expression: expression.to_string(),
                reason: e.to_string(),
            })?;
        let timezone: Tz = timezone
            .parse()
            .map_err(|_| TimetableError::TimeZone(timezone.to_string()))?;
        Ok(Timetable {
            schedule,
            timezone,
            daily_at: daily_time(expression),
        })
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Whether ticks are at most one per local date.
    pub fn is_daily(&self) -> bool {
        self.daily_at.is_some()
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<Tick> {
        match self.daily_at {
            Some(time) => self.next_daily(after, time),
            None => self
                .schedule
                .after(&after.with_timezone(&self.timezone))
                .next()
                .map(|at| Tick {
                    at: at.with_timezone(&Utc),
                    local_date: None,
                }),
        }
    }

    fn next_daily(&self, after: DateTime<Utc>, time: NaiveTime) -> Option<Tick> {
        // Start a day early: a time shifted over a gap can land after
        // midnight of the day `after` is in.
        let first = after.with_timezone(&self.timezone).date_naive() - Duration::days(1);
        (0..MAX_DAYS)
            .map(|offset| first + Duration::days(offset))
            .filter(|date| self.matches_date(date.and_time(time)))
            .filter_map(|date| {
                let at = resolve_local(self.timezone, date.and_time(time))?;
                Some(Tick {
                    at,
                    local_date: Some(date),
                })
            })
            .find(|tick| tick.at > after)
    }

    /// Whether the expression's day, month, weekday and year fields accept
    /// this local date (its time fields are fixed, and match by
    /// construction). cron compares fields, so any zone serves here.
    fn matches_date(&self, local: NaiveDateTime) -> bool {
        self.schedule.includes(Utc.from_utc_datetime(&local))
    }
}

/// The instant a local wall-clock time means: the first of two on a
/// fall-back day; on a spring-forward day, moved forward by the gap.
fn resolve_local(timezone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match timezone.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            let before = offset_secs(timezone, local - Duration::hours(12));
            let after = offset_secs(timezone, local + Duration::hours(12));
            let shifted = local + Duration::seconds(i64::from(after - before));
            timezone
                .from_local_datetime(&shifted)
                .earliest()
                .map(|at| at.with_timezone(&Utc))
        }
    }
}

fn offset_secs(timezone: Tz, around: NaiveDateTime) -> i32 {
    use chrono::Offset;
    timezone
        .offset_from_utc_datetime(&around)
        .fix()
        .local_minus_utc()
}

/// The time of day when seconds, minutes and hours are single numbers.
fn daily_time(expression: &str) -> Option<NaiveTime> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u32>().ok();
    NaiveTime::from_hms_opt(number(2)?, number(1)?, number(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ticks(table: &Timetable, from: &str, to: &str) -> Vec<Tick> {
        let end = utc(to);
        std::iter::successors(table.next_after(utc(from)), |t| table.next_after(t.at))
            .take_while(|t| t.at <= end)
            .collect()
    }

    #[test]
    fn a_daily_job_in_the_spring_gap_fires_once_an_hour_later() {
        let table = Timetable::parse("0 30 1 * * *", "Europe/Lisbon").unwrap();
        let found = ticks(&table, "2027-03-27T00:00:00Z", "2027-03-29T23:00:00Z");
        let at: Vec<_> = found.iter().map(|t| t.at).collect();
        // 01:30 WET, then 02:30 WEST (01:30 does not exist), then 01:30 WEST.
        assert_eq!(
            at,
            vec![
                utc("2027-03-27T01:30:00Z"),
                utc("2027-03-28T01:30:00Z"),
                utc("2027-03-29T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn a_daily_job_in_the_autumn_overlap_fires_once_at_the_first_occurrence() {
        let table = Timetable::parse("0 30 1 * * *", "Europe/Lisbon").unwrap();
        let found = ticks(&table, "2027-10-30T00:00:00Z", "2027-11-01T23:00:00Z");
        let at: Vec<_> = found.iter().map(|t| t.at).collect();
        assert_eq!(
            at,
            vec![
                utc("2027-10-30T00:30:00Z"),
                utc("2027-10-31T00:30:00Z"),
                utc("2027-11-01T01:30:00Z"),
            ]
        );
        let dates: Vec<_> = found
            .iter()
            .map(|t| t.local_date.unwrap().to_string())
            .collect();
        assert_eq!(dates, ["2027-10-30", "2027-10-31", "2027-11-01"]);
    }

    #[test]
    fn plain_cron_repeats_the_autumn_tick_which_is_why_daily_jobs_are_walked_by_date() {
        let schedule = cron::Schedule::from_str("0 30 1 * * *").unwrap();
        let tz: Tz = "Europe/Lisbon".parse().unwrap();
        let from = utc("2027-10-30T12:00:00Z").with_timezone(&tz);
        let on_the_day = schedule
            .after(&from)
            .take(3)
            .filter(|t| t.date_naive().to_string() == "2027-10-31")
            .count();
        assert_eq!(on_the_day, 2);
    }

    #[test]
    fn weekday_fields_still_apply_to_daily_jobs() {
        let table = Timetable::parse("0 0 8 * * Mon", "Europe/Lisbon").unwrap();
        let tick = table.next_after(utc("2027-03-24T12:00:00Z")).unwrap();
        assert_eq!(tick.at, utc("2027-03-29T07:00:00Z"));
        assert!(table.is_daily());
    }

    #[test]
    fn an_hourly_job_uses_cron_and_has_no_local_date() {
        let table = Timetable::parse("0 0 * * * *", "UTC").unwrap();
        let tick = table.next_after(utc("2027-01-01T10:15:00Z")).unwrap();
        assert_eq!(tick.at, utc("2027-01-01T11:00:00Z"));
        assert_eq!(tick.local_date, None);
    }

    #[test]
    fn five_field_expressions_and_unknown_zones_are_refused_with_a_hint() {
        let error = Timetable::parse("0 8 * * *", "UTC").unwrap_err();
        assert!(error.to_string().contains("six fields"), "{error}");
        assert!(Timetable::parse("0 0 8 * * *", "Mars/Olympus").is_err());
    }
}

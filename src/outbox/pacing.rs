//! The platform's limits as this process sees them: when each chat may
//! next be sent to, the sends of the last second, each group's sends of
//! the last minute.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::RateLimits;

pub(super) struct Pacing {
    limits: RateLimits,
    next_allowed: HashMap<String, Instant>,
    recent: VecDeque<Instant>,
    group_recent: HashMap<String, VecDeque<Instant>>,
    /// When the maps were last swept of chats whose waits are over.
    swept_at: Option<Instant>,
}

impl Pacing {
    pub fn new(limits: RateLimits) -> Self {
        Pacing {
            limits,
            next_allowed: HashMap::new(),
            recent: VecDeque::new(),
            group_recent: HashMap::new(),
            swept_at: None,
        }
    }

    /// None when a message to `chat` may go at `now`; else when it may.
    pub fn when_allowed(&mut self, chat: &str, is_group: bool, now: Instant) -> Option<Instant> {
        let limits = self.limits;
        if let Some(at) = self.next_allowed.get(chat).filter(|at| **at > now) {
            return Some(*at);
        }
        let second_ago = now - Duration::from_secs(1);
        while self.recent.front().is_some_and(|t| *t <= second_ago) {
            self.recent.pop_front();
        }
        if limits.global_per_second != u32::MAX
            && self.recent.len() >= limits.global_per_second as usize
        {
            return self.recent.front().map(|t| *t + Duration::from_secs(1));
        }
        if is_group && limits.group_per_minute != u32::MAX {
            let minute_ago = now - Duration::from_secs(60);
            let sent = self.group_recent.entry(chat.to_string()).or_default();
            while sent.front().is_some_and(|t| *t <= minute_ago) {
                sent.pop_front();
            }
            if sent.len() >= limits.group_per_minute as usize {
                return sent.front().map(|t| *t + Duration::from_secs(60));
            }
        }
        None
    }

    /// Counts a send to `chat` starting at `now`.
    pub fn note_send(&mut self, chat: &str, is_group: bool, now: Instant) {
        if self.limits.global_per_second != u32::MAX {
            self.recent.push_back(now);
        }
        if is_group && self.limits.group_per_minute != u32::MAX {
            self.group_recent
                .entry(chat.to_string())
                .or_default()
                .push_back(now);
        }
        if !self.limits.per_chat_interval.is_zero() {
            self.next_allowed
                .insert(chat.to_string(), now + self.limits.per_chat_interval);
        }
    }

    /// Holds `chat` back until `until` (a platform's retry-after).
    pub fn hold(&mut self, chat: &str, until: Instant) {
        let at = self.next_allowed.entry(chat.to_string()).or_insert(until);
        *at = (*at).max(until);
    }

    /// Forgets chats whose waits are over, so the maps hold only chats
    /// sent to lately (a long run touches many chats once).
    /// At most once a second: the sweep walks every chat it knows.
    pub fn forget_past(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now - at < Duration::from_secs(1))
        {
            return;
        }
        self.swept_at = Some(now);
        self.next_allowed.retain(|_, at| *at > now);
        let minute_ago = now - Duration::from_secs(60);
        self.group_recent
            .retain(|_, sent| sent.back().is_some_and(|t| *t > minute_ago));
    }
}

/// The platform's bot-wide and per-group limits, shared by every process
/// on the database (the per-chat pace is shared already: a delivered row
/// holds its chat's next row back in the database). A send takes a slot
/// of each limit that applies before it goes; when another process took
/// the last one, it waits. [`Pacing`] above keeps this process from asking
/// for slots it could not get; this is what holds across processes.
///
/// A database error lets the send go on this process's own pacing: a
/// message is never held back by an outage of the pacing rows alone.
pub(super) async fn shared_slot(
    store: &crate::store::Store,
    platform: &str,
    chat: &str,
    is_group: bool,
    limits: RateLimits,
) {
    if is_group && limits.group_per_minute != u32::MAX {
        take(store, platform, chat, 60_000, limits.group_per_minute).await;
    }
    if limits.global_per_second != u32::MAX {
        take(store, platform, "*", 1_000, limits.global_per_second).await;
    }
}

/// Waits for one slot of `per_window` sends per `window_ms` in `scope`.
async fn take(
    store: &crate::store::Store,
    platform: &str,
    scope: &str,
    window_ms: i64,
    per_window: u32,
) {
    let interval = (window_ms / i64::from(per_window.max(1))).max(1);
    let tolerance = window_ms - interval;
    loop {
        match store
            .take_send_slot(platform, scope, interval, tolerance)
            .await
        {
            Ok(None) => return,
            Ok(Some(wait_ms)) => {
                let wait = u64::try_from(wait_ms).unwrap_or(1).min(60_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Err(error) => {
                tracing::debug!(error = ?error, "shared pacing unavailable; pacing this process alone");
                return;
            }
        }
    }
}

//! Mentions sent while no gateway session was open, read back from channel
//! history.
//!
//! serenity cannot resume another process's session, and a dropped session
//! that could not be resumed is replaced: either way the new session starts
//! with a `READY`, and what Discord dispatched to the old one in between is
//! never replayed. So after each `READY` soloist reads, in each allowed
//! server channel it was active in (an update recorded there in the last
//! [`LOOK_BACK`]), the messages after the last update recorded there before
//! the gap, and hands those that mention the bot to the front door exactly
//! as the gateway's `MESSAGE_CREATE` would: the same addressing and
//! allow-list checks, the same update key. A message seen live *and* in
//! history is one update (both are keyed on its id, `platform_updates`'
//! unique key), so it is handled once.
//!
//! Bounded on purpose, so a takeover costs a few requests, not a crawl: at
//! most [`CHANNELS_AT_MOST`] channels (the most recently active), one page
//! of [`PAGE`] messages each, asked one after another through the shared
//! [`Rest`] client (a global 429 pauses it like any other call). A channel
//! that refuses (403, 404) or fails (5xx, timeout) is logged once and
//! skipped; nothing here stops the gateway. DMs are not read back (their
//! channels are not in the allow-list, and a DM carries no mention).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use serenity::all::Message;
use tokio_util::sync::CancellationToken;

use super::gateway::{DiscordSide, message_arrival};
use super::rest::{Rest, RestError};
use crate::domain::{ChatKind, Platform};
use crate::frontdoor::{Arrival, FrontDoor};
use crate::store::{Store, now_ms};

/// Channels read back after a new session, at most.
pub const CHANNELS_AT_MOST: usize = 20;
/// Messages read per channel: one page, Discord's largest.
pub const PAGE: u8 = 100;
/// How far back a channel counts as one the bot was active in.
pub const LOOK_BACK: Duration = Duration::from_secs(24 * 3600);
/// A channel's 429 shorter than this is waited out once; a longer one
/// skips the channel (the gateway is live again; the rest can wait).
const WAIT_AT_MOST: Duration = Duration::from_secs(5);

/// What reading history back needs, for one holder of the gateway.
pub struct Recovery {
    pub door: Arc<FrontDoor<DiscordSide>>,
    pub store: Store,
    pub rest: Arc<Rest>,
    pub bot_user_id: u64,
    /// `discord.allowed_channel_ids`: the only channels read.
    pub channels: Vec<String>,
    /// Cancelled when this process stops holding the gateway.
    pub stop: CancellationToken,
    /// When the gap began (Unix ms): updates recorded before it came from
    /// an earlier session, so the last of them is where history is read
    /// from; anything later came live in the new one. Set when this holder
    /// took the gateway and when a connection drops; cleared by a resume
    /// (Discord replays what it missed).
    gap_since: Mutex<Option<i64>>,
    /// One read-back at a time.
    running: tokio::sync::Mutex<()>,
}

impl Recovery {
    /// For a holder that took the gateway now.
    pub fn new(
        door: Arc<FrontDoor<DiscordSide>>,
        store: Store,
        rest: Arc<Rest>,
        bot_user_id: u64,
        channels: Vec<String>,
        stop: CancellationToken,
    ) -> Recovery {
        Recovery {
            door,
            store,
            rest,
            bot_user_id,
            channels,
            stop,
            gap_since: Mutex::new(Some(now_ms())),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The connection dropped: a gap begins, unless one already has.
    pub fn connection_lost(&self) {
        self.gap().get_or_insert_with(now_ms);
    }

    /// The session was resumed: Discord replays what it missed.
    pub fn resumed(&self) {
        self.gap().take();
    }

    /// After a `READY`: reads back the mentions sent in the gap. When no
    /// drop was seen (serenity restarts a shard that cannot resume without
    /// telling), the gap ends now: every update recorded so far came from
    /// the old session, since the new one's events are only being
    /// dispatched.
    pub async fn after_new_session(&self) {
        let gap_since = self.gap().take().unwrap_or_else(now_ms);
        let _one_at_a_time = self.running.lock().await;
        let look_back = i64::try_from(LOOK_BACK.as_millis()).unwrap_or(i64::MAX);
        let marks = match self
            .store
            .last_update_per_chat(Platform::Discord, gap_since - look_back, gap_since)
            .await
        {
            Ok(marks) => marks,
            Err(error) => {
                tracing::warn!(error = ?error, "could not read where the Discord channels were left; missed mentions are not read back");
                return;
            }
        };
        let mut recovered = 0;
        for (channel, last_seen) in channels_to_read(marks, &self.channels) {
            if self.stop.is_cancelled() {
                break;
            }
            recovered += self.read_back(&channel, last_seen).await;
        }
        if recovered > 0 {
            tracing::info!(
                recovered,
                "mentions sent while the gateway was away were read back from channel history"
            );
        }
    }

    /// Hands the mentions in one page of `channel` after `last_seen` to
    /// the front door; returns how many were new.
    async fn read_back(&self, channel: &str, last_seen: i64) -> usize {
        let after = u64::try_from(last_seen).unwrap_or(0);
        let page = match self.page(channel, after).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%channel, %error, "could not read a Discord channel's history for missed mentions; skipped");
                return 0;
            }
        };
        let arrivals = self.mentions(channel, page);
        if arrivals.is_empty() {
            return 0;
        }
        match self.door.record(Platform::Discord, arrivals).await {
            Ok(fresh) => {
                let count = fresh.len();
                self.door.queue(fresh).await;
                count
            }
            Err(error) => {
                tracing::warn!(%channel, error = ?error, "could not record the mentions read back from a Discord channel");
                0
            }
        }
    }

    async fn page(&self, channel: &str, after: u64) -> Result<Vec<Value>, RestError> {
        match self.rest.messages_after(channel, after, PAGE).await {
            Err(RestError::RateLimited { retry_after, .. }) if retry_after <= WAIT_AT_MOST => {
                tokio::time::sleep(retry_after).await;
                self.rest.messages_after(channel, after, PAGE).await
            }
            answer => answer,
        }
    }

    /// The messages of a page meant for the bot, oldest first (Discord
    /// gives newest first; the channel's lane keeps the order it is given).
    /// A message serenity cannot read, or from another channel than the one
    /// asked, is left out.
    fn mentions(&self, channel: &str, page: Vec<Value>) -> Vec<Arrival<()>> {
        let mut arrivals: Vec<Arrival<()>> = page
            .into_iter()
            .filter_map(|json| match serde_json::from_value::<Message>(json) {
                Ok(message) => Some(message),
                Err(error) => {
                    tracing::debug!(%channel, %error, "a message in channel history could not be read; left out");
                    None
                }
            })
            .filter(|message| message.channel_id.to_string() == channel)
            .filter_map(|message| message_arrival(&message, self.bot_user_id, ChatKind::Group))
            .collect();
        arrivals.sort_by_key(|arrival| arrival.update_id);
        arrivals
    }

    fn gap(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        self.gap_since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Of the channels with their last update seen, those read back: allowed
/// ones only, the most recently active first, at most
/// [`CHANNELS_AT_MOST`].
fn channels_to_read(mut marks: Vec<(String, i64)>, allowed: &[String]) -> Vec<(String, i64)> {
    marks.retain(|(channel, _)| allowed.contains(channel));
    marks.sort_by_key(|(_, last_seen)| std::cmp::Reverse(*last_seen));
    marks.truncate(CHANNELS_AT_MOST);
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_channels_are_read_back_at_most_twenty_the_most_recently_active_first() {
        let allowed: Vec<String> = (0..25).map(|n| format!("c{n}")).collect();
        let mut marks: Vec<(String, i64)> = (0..25).map(|n| (format!("c{n}"), 100 + n)).collect();
        marks.push(("not-allowed".into(), 1_000));
        marks.push(("dm".into(), 999));

        let read = channels_to_read(marks, &allowed);

        assert_eq!(read.len(), CHANNELS_AT_MOST);
        assert_eq!(read[0], ("c24".to_string(), 124));
        assert_eq!(read[19], ("c5".to_string(), 105));
        assert!(read.iter().all(|(c, _)| allowed.contains(c)));
    }
}

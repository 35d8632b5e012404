//! Rate limits on work a message starts (a flow run, a routed message),
//! per user and per flow, with governor's keyed GCRA limiters. A request
//! beyond them gets one sentence and no model call.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::settings::RateLimitSettings;

/// The sentence a limited request gets.
pub const LIMITED: &str = "You're sending requests faster than I take them; nothing was started. Wait a minute and send it again.";

/// Which limit stopped a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limited {
    User(String),
    Flow(String),
}

pub struct Limits {
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    per_flow: Option<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("per_user", &self.per_user.is_some())
            .field("per_flow", &self.per_flow.is_some())
            .finish()
    }
}

fn limiter(per_minute: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_minute(rate).allow_burst(burst),
    ))
}

impl Limits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Limits {
            per_user: limiter(settings.per_user_per_minute, settings.per_user_burst),
            per_flow: limiter(settings.per_flow_per_minute, settings.per_flow_burst),
        }
    }

    /// Takes one request for `user` (and `flow`, when it starts one);
    /// Err names the limit that refused it.
    pub fn check(&self, user: Option<&str>, flow: Option<&str>) -> Result<(), Limited> {
        if let (Some(limiter), Some(user)) = (&self.per_user, user)
            && limiter.check_key(&user.to_string()).is_err()
        {
            return Err(Limited::User(user.to_string()));
        }
        if let (Some(limiter), Some(flow)) = (&self.per_flow, flow)
            && limiter.check_key(&flow.to_string()).is_err()
        {
            return Err(Limited::Flow(flow.to_string()));
        }
        self.forget_idle();
        Ok(())
    }

    /// The per-key maps only grow; dropping keys whose bucket is full again
    /// keeps them at the number of recently active users and flows.
    fn forget_idle(&self) {
        for limiter in [&self.per_user, &self.per_flow].into_iter().flatten() {
            if limiter.len() > 1_000 {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(user_burst: u32, flow_burst: u32) -> RateLimitSettings {
        RateLimitSettings {
            per_user_per_minute: 1,
            per_user_burst: user_burst,
            per_flow_per_minute: 1,
            per_flow_burst: flow_burst,
        }
    }

    #[test]
    fn a_burst_beyond_the_user_limit_is_refused() {
        let limits = Limits::new(&settings(2, 100));
        assert!(limits.check(Some("telegram:1"), Some("draft")).is_ok());
        assert!(limits.check(Some("telegram:1"), Some("draft")).is_ok());
        assert_eq!(
            limits.check(Some("telegram:1"), Some("draft")),
            Err(Limited::User("telegram:1".into()))
        );
        // Another user has a bucket of their own.
        assert!(limits.check(Some("telegram:2"), Some("draft")).is_ok());
    }

    #[test]
    fn a_burst_beyond_the_flow_limit_is_refused_across_users() {
        let limits = Limits::new(&settings(100, 2));
        assert!(limits.check(Some("a"), Some("draft")).is_ok());
        assert!(limits.check(Some("b"), Some("draft")).is_ok());
        assert_eq!(
            limits.check(Some("c"), Some("draft")),
            Err(Limited::Flow("draft".into()))
        );
        assert!(limits.check(Some("c"), None).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = Limits::new(&RateLimitSettings {
            per_user_per_minute: 0,
            per_user_burst: 0,
            per_flow_per_minute: 0,
            per_flow_burst: 0,
        });
        for _ in 0..100 {
            assert!(limits.check(Some("a"), Some("draft")).is_ok());
        }
    }
}

//! Per-key rate limiting with governor (`HOOKHOUSE_RATE_LIMIT_PER_KEY`).
//!
//! A key is public (it is in URLs and in `__kdd_requester_key`), so the limit is not counted per
//! key alone: a key's requests whose token the edge knows to be right, wrong, or cannot tell yet
//! each have their own budget. Anyone can flood a key with wrong tokens and run that budget into
//! 429s; the key's owner, with the right token, is not slowed by it.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::answer::Refusal;
use crate::credentials::Verdict;
use crate::events;
use crate::ingest::Key;

pub struct KeyRateLimiter {
    limiter: DefaultKeyedRateLimiter<(Key, Verdict)>,
    clock: DefaultClock,
}

impl KeyRateLimiter {
    /// `per_second` requests a second per key, in bursts of up to twice that. `None` for 0 (off).
    pub fn new(per_second: u32) -> Option<KeyRateLimiter> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        Some(KeyRateLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    pub fn check(&self, key: &Key, verdict: Verdict) -> Result<(), Refusal> {
        self.limiter
            .check_key(&(*key, verdict))
            .map_err(|not_until| {
                events::http::rate_limited(&key.to_string());
                let wait = not_until.wait_time_from(self.clock.now());
                Refusal::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil() as u64,
                }
            })
    }

    /// Forgets keys that are back under their limit, so that many distinct keys cannot grow the
    /// limiter's memory without bound. Called periodically.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_then_429() {
        let limiter = KeyRateLimiter::new(5).unwrap();
        let key = Key::generate();
        for _ in 0..10 {
            assert!(limiter.check(&key, Verdict::Right).is_ok());
        }
        let refusal = limiter.check(&key, Verdict::Right).unwrap_err();
        assert!(matches!(refusal, Refusal::RateLimited { .. }));
        assert!(
            limiter.check(&Key::generate(), Verdict::Right).is_ok(),
            "other keys are not affected"
        );
    }

    #[test]
    fn a_flood_with_a_wrong_token_does_not_throttle_the_right_one() {
        let limiter = KeyRateLimiter::new(5).unwrap();
        let key = Key::generate();
        while limiter.check(&key, Verdict::Wrong).is_ok() {}
        assert!(limiter.check(&key, Verdict::Right).is_ok());
        assert!(KeyRateLimiter::new(0).is_none());
    }
}

//! When an enforcer tries the policy service again: after a failure the
//! wait doubles up to a ceiling; half of each wait is random, so that the
//! enforcers one outage cut off do not all return in the same instant; and
//! a service that answers `429` or `503` with `Retry-After` is never asked
//! again sooner than it said. The enforcer and the fleet simulator of
//! `make bench-fleet` both follow these rules.

use std::time::Duration;

/// The first wait after a failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait.
pub const LAST_RETRY: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured (a larger one is a service bug, not a
/// reason to go quiet for an hour).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The delay before the next attempt, doubling per failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// One more failure: how long to wait. `random` is uniform in `0..1`;
    /// the wait is between half the current delay and all of it, and at
    /// least `retry_after`.
    pub fn failed(&mut self, retry_after: Option<Duration>, random: f64) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(LAST_RETRY);
        let wait = delay.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0));
        match retry_after {
            Some(floor) => wait.max(floor.min(MAX_RETRY_AFTER)),
            None => wait,
        }
    }

    /// A success: the next failure starts from [`FIRST_RETRY`] again.
    pub fn succeeded(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// `Retry-After` in seconds (the form the policy service sends; an HTTP
/// date is not honoured).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    let secs: u64 = header?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// `base` shortened by up to `spread` (a fraction) at random: long-polls
/// that all began at one push end at different times.
pub fn jittered(base: Duration, spread: f64, random: f64) -> Duration {
    base.mul_f64(1.0 - spread.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_ceiling_half_of_each_random_and_a_success_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.failed(None, 0.0), Duration::from_millis(250));
        assert_eq!(b.failed(None, 1.0), Duration::from_secs(1));
        for _ in 0..10 {
            b.failed(None, 1.0);
        }
        assert_eq!(b.failed(None, 1.0), LAST_RETRY);
        assert_eq!(b.failed(None, 0.0), LAST_RETRY / 2);
        b.succeeded();
        assert_eq!(b.failed(None, 1.0), FIRST_RETRY);
    }

    #[test]
    fn the_service_is_not_asked_again_before_its_retry_after() {
        let mut b = Backoff::default();
        let asked = retry_after(Some(" 7 "));
        assert_eq!(asked, Some(Duration::from_secs(7)));
        assert_eq!(b.failed(asked, 0.3), Duration::from_secs(7));
        // A longer own delay stands.
        let mut long = Backoff {
            next: Duration::from_secs(20),
        };
        assert_eq!(long.failed(asked, 1.0), Duration::from_secs(20));
        assert_eq!(retry_after(Some("99999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_spread() {
        let base = Duration::from_secs(10);
        assert_eq!(jittered(base, 0.2, 0.0), base);
        assert_eq!(jittered(base, 0.2, 1.0), Duration::from_secs(8));
        assert_eq!(jittered(base, 0.2, 7.0), Duration::from_secs(8));
    }
}

//! How fast the copier may go: messages per second and bytes per second
//! per store (`[copier.pace.old]`, `[copier.pace.new]`), shared by every
//! user copied at once; and how long to wait after a store failed or said
//! it was throttling us.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Caps for one store; 0 means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    #[serde(default)]
    pub messages_per_second: u64,
    #[serde(default)]
    pub bytes_per_second: u64,
}

/// A token bucket: `rate` per second, holding at most one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Option<Bucket> {
        (rate > 0).then(|| Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            at: Instant::now(),
        })
    }

    /// Takes `n` (which may overdraw: a message larger than a second's
    /// bytes still goes) and says how long to wait before going on.
    fn take(&mut self, n: f64, now: Instant) -> Duration {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate) - n;
        self.at = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The caps of both stores; every message copied counts against both (it
/// is read from OLD and written to NEW).
#[derive(Debug, Default)]
pub struct Pace {
    buckets: Mutex<Vec<(Bucket, bool)>>,
}

impl Pace {
    pub fn new(old: Caps, new: Caps) -> Pace {
        let mut buckets = Vec::new();
        for caps in [old, new] {
            buckets.extend(Bucket::new(caps.messages_per_second).map(|b| (b, false)));
            buckets.extend(Bucket::new(caps.bytes_per_second).map(|b| (b, true)));
        }
        Pace {
            buckets: Mutex::new(buckets),
        }
    }

    /// How long `messages` messages of `bytes` in all must wait, now.
    fn wait(&self, messages: u64, bytes: u64, now: Instant) -> Duration {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .iter_mut()
            .map(|(b, is_bytes)| b.take(if *is_bytes { bytes } else { messages } as f64, now))
            .max()
            .unwrap_or_default()
    }

    /// Waits until `messages` messages of `bytes` in all may be copied (a
    /// MULTIAPPEND batch counts every message it carries).
    pub async fn take(&self, messages: u64, bytes: u64) {
        let wait = self.wait(messages, bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait before the `failures`-th retry after a store error:
/// exponential from `base`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    base.saturating_mul(1u32 << failures.min(16)).min(max)
}

/// Whether a store's answer says it is overloaded or throttling us (Gmail's
/// `[THROTTLED]` and `[UNAVAILABLE]`, Microsoft's "Request is throttled"):
/// worth waiting longer than for other failures.
pub fn is_throttling(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    [
        "[THROTTLED]",
        "[UNAVAILABLE]",
        "[LIMIT]",
        "REQUEST IS THROTTLED",
    ]
    .iter()
    .any(|m| upper.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_cap_spaces_messages_out() {
        let pace = Pace::new(
            Caps {
                messages_per_second: 10,
                bytes_per_second: 0,
            },
            Caps::default(),
        );
        let t = Instant::now();
        // A second's worth goes at once, then one every 100 ms.
        for _ in 0..10 {
            assert_eq!(pace.wait(1, 1, t), Duration::ZERO);
        }
        let w = pace.wait(1, 1, t);
        assert!((w.as_millis() as i64 - 100).abs() <= 1, "{w:?}");
        assert_eq!(pace.wait(1, 1, t + Duration::from_secs(2)), Duration::ZERO);
        // A MULTIAPPEND batch of 20 counts as 20: after 10, a second's wait.
        let later = t + Duration::from_secs(10);
        let w = pace.wait(20, 20, later);
        assert!((w.as_millis() as i64 - 1000).abs() <= 1, "{w:?}");
    }

    #[test]
    fn the_strictest_cap_of_either_store_wins() {
        let pace = Pace::new(
            Caps::default(),
            Caps {
                messages_per_second: 0,
                bytes_per_second: 1000,
            },
        );
        let t = Instant::now();
        assert_eq!(pace.wait(1, 1000, t), Duration::ZERO);
        let w = pace.wait(1, 500, t);
        assert!((w.as_millis() as i64 - 500).abs() <= 1, "{w:?}");
        assert_eq!(Pace::default().wait(1, u64::MAX, t), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), s(60), 0), s(1));
        assert_eq!(backoff(s(1), s(60), 3), s(8));
        assert_eq!(backoff(s(1), s(60), 30), s(60));
    }

    #[test]
    fn throttling_answers_are_recognised() {
        assert!(is_throttling("a1 NO [THROTTLED] slow down"));
        assert!(is_throttling("a NO [UNAVAILABLE] try later"));
        assert!(is_throttling(
            "x BAD Request is throttled. Suggested Backoff"
        ));
        assert!(!is_throttling("a NO [TRYCREATE] no such folder"));
    }
}

//! Exponential backoff with jitter for transient connector failures.
//!
//! The n-th retry waits a random time in `[d/2, d]` with `d = min(base · 2ⁿ, max)` ("equal
//! jitter"): retries spread out instead of arriving together, yet never wait less than half the
//! nominal delay. The randomness is a small xorshift seeded per schedule, enough for spreading.

use std::time::Duration;

/// A retry schedule.
#[derive(Clone, Debug)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    state: u64,
}

impl Backoff {
    /// A schedule starting near `base_ms` and never above `max_ms`, with jitter seeded by `seed`.
    pub fn new(base_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        Backoff { base_ms: base_ms.max(1), max_ms: max_ms.max(base_ms.max(1)), state: seed | 1 }
    }

    /// The wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let nominal = self.base_ms.saturating_mul(1u64 << attempt.min(32)).min(self.max_ms);
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let half = nominal / 2;
        Duration::from_millis(half + self.state % (nominal - half + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_jitter() {
        let mut backoff = Backoff::new(10, 1000, 42);
        let delays: Vec<u64> = (0..12).map(|attempt| backoff.delay(attempt).as_millis() as u64).collect();
        for (attempt, delay) in delays.iter().enumerate() {
            let nominal = (10u64 << attempt).min(1000);
            assert!((nominal / 2..=nominal).contains(delay), "attempt {attempt}: {delay} ms");
        }
        let mut other = Backoff::new(10, 1000, 7);
        let other_delays: Vec<u64> = (0..12).map(|attempt| other.delay(attempt).as_millis() as u64).collect();
        assert_ne!(delays, other_delays, "two schedules should not retry in lockstep");
    }
}

//! The membership's heartbeat, shared with the data plane: the node answers
//! ARP and neighbor solicitations, and sends gratuitous packets, only while
//! it beats.
//!
//! A speaker stopped for a while (SIGSTOP, swapping, a starved CPU) finds,
//! when it resumes, the ARP requests that queued in its sockets meanwhile,
//! and gratuitous repeats that fell due. Its peers may have declared it down
//! and a successor may announce its IPs by then; answering those stale
//! requests or sending those repeats would point clients back at it. The
//! membership beats on every turn of its event loop (at least every 20 ms)
//! and closes the gate for a grace period when it notices a stall; the data
//! plane checks the gate before every reply and announcement, so whichever
//! task runs first after the stall, nothing stale goes out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The beat, as microseconds since `origin`.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_beat: AtomicU64,
    quiet_until: AtomicU64,
    max_gap: Duration,
}

impl Heartbeat {
    /// A heartbeat that counts as stopped when it did not beat for `max_gap`.
    #[must_use]
    pub fn new(max_gap: Duration, now: Instant) -> Self {
        Self {
            origin: now,
            last_beat: AtomicU64::new(0),
            quiet_until: AtomicU64::new(0),
            max_gap,
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// The membership's event loop turned at `now`.
    pub fn beat(&self, now: Instant) {
        self.last_beat.store(self.micros(now), Ordering::Release);
    }

    /// Closes the gate until `until` (after a noticed stall).
    pub fn quiet_until(&self, until: Instant) {
        self.quiet_until
            .fetch_max(self.micros(until), Ordering::AcqRel);
    }

    /// Whether the node may answer and announce at `now`.
    #[must_use]
    pub fn allows(&self, now: Instant) -> bool {
        let now = self.micros(now);
        let last = self.last_beat.load(Ordering::Acquire);
        let gap = u64::try_from(self.max_gap.as_micros()).unwrap_or(u64::MAX);
        now.saturating_sub(last) <= gap && now >= self.quiet_until.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_while_it_beats_and_not_while_quiet() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let heart = Heartbeat::new(Duration::from_millis(140), t0);
        heart.beat(ms(0));
        assert!(heart.allows(ms(100)));
        assert!(heart.allows(ms(140)));
        // Stopped: no beat for longer than the gap.
        assert!(!heart.allows(ms(300)));
        // Resumed, the stall noticed: quiet for a grace period.
        heart.beat(ms(300));
        heart.quiet_until(ms(540));
        assert!(!heart.allows(ms(301)));
        heart.beat(ms(520));
        assert!(!heart.allows(ms(530)));
        heart.beat(ms(540));
        assert!(heart.allows(ms(540)));
        // An earlier quiet period never shortens a later one.
        heart.quiet_until(ms(600));
        heart.quiet_until(ms(550));
        heart.beat(ms(580));
        assert!(!heart.allows(ms(590)));
    }
}

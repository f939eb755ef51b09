//! Reply rate limits (SPEC §4: "ARP/NS replies are rate-limited per
//! interface and sender"): token buckets over plain data, time passed in.
//!
//! A request for an IP this node answers for gets its reply only when the
//! bucket of its sender and the bucket of its interface both hold a token.
//! The sender's bucket is checked first, and a sender over its limit spends
//! nothing of its interface's budget, so one noisy host cannot use up the
//! replies of the others. Both tables of buckets are bounded: a flood of
//! spoofed senders evicts the least recently seen and cannot grow memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use crate::packet::MacAddr;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens earned per second: the sustained rate.
    pub per_second: NonZeroU32,
    /// Tokens a bucket holds when full: how many replies may go out at once
    /// after a quiet period.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` sustained, `burst` at once.
    #[must_use]
    pub const fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_second, burst }
    }

    /// Time to earn one token (at least a nanosecond).
    fn interval(self) -> Duration {
        (Duration::from_secs(1) / self.per_second.get()).max(Duration::from_nanos(1))
    }
}

/// The responder's reply limits.
///
/// The defaults are meant never to limit normal traffic, only floods:
///
/// - **Per sender, 200/s with a burst of 1,000.** The heaviest normal asker
///   is the LAN's router: after it restarts it resolves every VIP of a node
///   at once (one request per VIP; the benchmarks take over 1,000), and
///   afterwards it re-validates each cached entry with one unicast probe
///   every 15–45 s (Linux), which stays below 200/s up to several thousand
///   VIPs. A single host flooding requests gets a tenth of the interface's
///   budget.
/// - **Per interface, 2,000/s with a burst of 2,000**: the budget the
///   gratuitous cap (`AnnouncerConfig::max_pps`) grants by default, so a
///   switch port that accepts our takeover bursts accepts this too, and a
///   flood of any rate costs at most that many replies.
/// - **4,096 senders tracked**, more than the hosts of a /20. Beyond that
///   the least recently seen sender is forgotten and starts again with a
///   full bucket (as it would after a quiet period anyway). Against
///   spoofed senders the per-sender limit is therefore only as strong as
///   the table is large; the per-interface limit is what bounds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLimitConfig {
    /// Replies per interface, both families together.
    pub per_interface: Rate,
    /// Replies per sender (hardware and IP address).
    pub per_sender: Rate,
    /// How many senders have a bucket at a time.
    pub senders: NonZeroUsize,
}

impl Default for ReplyLimitConfig {
    fn default() -> Self {
        Self {
            per_interface: Rate::new(nonzero(2000), nonzero(2000)),
            per_sender: Rate::new(nonzero(200), nonzero(1000)),
            senders: NonZeroUsize::MIN.saturating_add(4096 - 1),
        }
    }
}

const fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(n - 1)
}

/// Interfaces with a bucket at a time. Only interfaces the node answers on
/// get one, so this bounds only the leftovers of interfaces that are gone.
const INTERFACES_TRACKED: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1024 - 1);

/// Who asked: the reply goes back to this pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sender {
    /// The asker's hardware address, when the request shows it: ARP always
    /// does; a neighbor solicitation through its source link-layer address
    /// option or its Ethernet frame.
    pub mac: Option<MacAddr>,
    /// The asker's IP address.
    pub ip: IpAddr,
}

/// The limit a reply would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Its interface's.
    Interface,
    /// Its sender's.
    Sender,
}

/// A token bucket: `burst` tokens when full, one more earned every
/// `1 / per_second`, one spent per reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u32,
    /// When the last token was earned, or the bucket found full: the next
    /// token is earned one interval later.
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` at `now`.
    #[must_use]
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst.get(),
            refilled: now,
        }
    }

    /// Adds the tokens earned since the last refill, up to the burst. A
    /// time before the last refill earns nothing.
    pub fn refill(&mut self, rate: Rate, now: Instant) {
        let room = rate.burst.get().saturating_sub(self.tokens);
        let interval = rate.interval();
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = u32::try_from(elapsed.as_nanos() / interval.as_nanos()).unwrap_or(u32::MAX);
        if earned >= room {
            // Full: time spent full earns nothing.
            self.tokens = rate.burst.get();
            self.refilled = now;
        } else if earned > 0 {
            self.tokens += earned;
            self.refilled += interval * earned;
        }
    }

    /// Tokens left.
    #[must_use]
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    fn take(&mut self) {
        self.tokens = self.tokens.saturating_sub(1);
    }
}

/// Token buckets by key, at most `capacity` of them: when full, the bucket
/// used least recently is dropped for a new key.
#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    capacity: NonZeroUsize,
    entries: HashMap<K, Entry>,
    /// Keys by their last use, oldest first.
    by_use: BTreeMap<u64, K>,
    uses: u64,
}

#[derive(Debug)]
struct Entry {
    bucket: TokenBucket,
    used: u64,
}

impl<K: Copy + Eq + Hash> Buckets<K> {
    fn new(rate: Rate, capacity: NonZeroUsize) -> Self {
        Self {
            rate,
            capacity,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            uses: 0,
        }
    }

    /// The bucket of `key` refilled to `now`, marked as used most recently;
    /// a new key gets a full one.
    fn bucket(&mut self, key: K, now: Instant) -> &mut TokenBucket {
        if self.entries.len() >= self.capacity.get()
            && !self.entries.contains_key(&key)
            && let Some((_, oldest)) = self.by_use.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.uses += 1;
        let used = self.uses;
        let rate = self.rate;
        let entry = self.entries.entry(key).or_insert(Entry {
            bucket: TokenBucket::full(rate, now),
            used,
        });
        self.by_use.remove(&entry.used);
        entry.used = used;
        self.by_use.insert(used, key);
        entry.bucket.refill(rate, now);
        &mut entry.bucket
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The reply limits of one responder: a bucket per interface and one per
/// sender.
#[derive(Debug)]
pub struct ReplyLimits {
    interfaces: Buckets<u32>,
    senders: Buckets<Sender>,
}

impl ReplyLimits {
    /// Empty limits: every interface and sender starts with a full bucket.
    #[must_use]
    pub fn new(config: &ReplyLimitConfig) -> Self {
        Self {
            interfaces: Buckets::new(config.per_interface, INTERFACES_TRACKED),
            senders: Buckets::new(config.per_sender, config.senders),
        }
    }

    /// Whether a reply to `sender` may go out on interface `ifindex` at
    /// `now`; when it may, it spends a token from both buckets.
    ///
    /// # Errors
    ///
    /// The limit it would exceed; nothing is spent then.
    pub fn admit(&mut self, ifindex: u32, sender: Sender, now: Instant) -> Result<(), Limit> {
        let from_sender = self.senders.bucket(sender, now);
        if from_sender.tokens() == 0 {
            return Err(Limit::Sender);
        }
        let on_interface = self.interfaces.bucket(ifindex, now);
        if on_interface.tokens() == 0 {
            return Err(Limit::Interface);
        }
        on_interface.take();
        from_sender.take();
        Ok(())
    }

    /// How many senders have a bucket now.
    #[must_use]
    pub fn senders_tracked(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate::new(
            NonZeroU32::new(per_second).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    fn config(per_interface: Rate, per_sender: Rate, senders: usize) -> ReplyLimitConfig {
        ReplyLimitConfig {
            per_interface,
            per_sender,
            senders: NonZeroUsize::new(senders).unwrap(),
        }
    }

    fn sender(n: u32) -> Sender {
        let [_, a, b, c] = n.to_be_bytes();
        Sender {
            mac: Some(MacAddr::new(0x02, 0, 0, a, b, c)),
            ip: IpAddr::V4(Ipv4Addr::from(0xc612_0000 | n)),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_defaults_let_a_router_resolve_a_thousand_vips_at_once() {
        let mut limits = ReplyLimits::new(&ReplyLimitConfig::default());
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limits.admit(2, sender(1), now), Ok(()));
        }
        assert_eq!(limits.admit(2, sender(1), now), Err(Limit::Sender));
        // Then 200 a second from the same router.
        let later = now + Duration::from_secs(1);
        for _ in 0..200 {
            assert_eq!(limits.admit(2, sender(1), later), Ok(()));
        }
        assert_eq!(limits.admit(2, sender(1), later), Err(Limit::Sender));
    }

    #[test]
    fn a_bucket_spends_its_burst_then_earns_one_token_per_interval() {
        let rate = rate(10, 3);
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        for _ in 0..3 {
            assert!(bucket.tokens() > 0);
            bucket.take();
        }
        assert_eq!(bucket.tokens(), 0);
        bucket.refill(rate, start + ms(99));
        assert_eq!(bucket.tokens(), 0);
        bucket.refill(rate, start + ms(100));
        assert_eq!(bucket.tokens(), 1);
        // The part of an interval already elapsed is kept: 250 ms in, the
        // second token is due at 200 ms and the third at 300 ms.
        bucket.refill(rate, start + ms(250));
        assert_eq!(bucket.tokens(), 2);
        bucket.refill(rate, start + ms(300));
        assert_eq!(bucket.tokens(), 3);
    }

    #[test]
    fn a_quiet_period_earns_no_more_than_the_burst() {
        let rate = rate(10, 3);
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        bucket.refill(rate, start + Duration::from_secs(3600));
        assert_eq!(bucket.tokens(), 3);
        bucket.take();
        // Time spent full earned nothing: the next token is one interval
        // after the last refill, not before.
        bucket.refill(rate, start + Duration::from_secs(3600) + ms(99));
        assert_eq!(bucket.tokens(), 2);
    }

    #[test]
    fn a_clock_going_backwards_earns_nothing() {
        let rate = rate(10, 3);
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::full(rate, start);
        bucket.take();
        bucket.refill(rate, start - Duration::from_secs(5));
        assert_eq!(bucket.tokens(), 2);
    }

    #[test]
    fn a_flooding_sender_does_not_starve_another() {
        let mut limits = ReplyLimits::new(&config(rate(100, 10), rate(5, 5), 16));
        let now = Instant::now();
        let answered = (0..1000)
            .filter(|_| limits.admit(2, sender(1), now).is_ok())
            .count();
        assert_eq!(answered, 5);
        // The refused requests spent none of the interface's budget.
        assert_eq!(limits.admit(2, sender(2), now), Ok(()));
    }

    #[test]
    fn the_interface_limit_bounds_many_senders() {
        let mut limits = ReplyLimits::new(&config(rate(100, 10), rate(5, 5), 64));
        let now = Instant::now();
        let answered = (0..50)
            .filter(|n| limits.admit(2, sender(*n), now).is_ok())
            .count();
        assert_eq!(answered, 10);
        assert_eq!(limits.admit(2, sender(99), now), Err(Limit::Interface));
        // Another interface has its own budget.
        assert_eq!(limits.admit(3, sender(99), now), Ok(()));
        // A sender refused for its interface kept its token.
        let mut limits = ReplyLimits::new(&config(rate(1, 1), rate(1, 1), 4));
        assert_eq!(limits.admit(2, sender(1), now), Ok(()));
        assert_eq!(limits.admit(2, sender(2), now), Err(Limit::Interface));
        assert_eq!(limits.admit(3, sender(2), now), Ok(()));
    }

    #[test]
    fn the_least_recently_seen_sender_is_forgotten_first() {
        let mut limits = ReplyLimits::new(&config(rate(1000, 1000), rate(1, 1), 2));
        let now = Instant::now();
        assert_eq!(limits.admit(2, sender(1), now), Ok(()));
        assert_eq!(limits.admit(2, sender(2), now), Ok(()));
        // 1 is seen again (and refused), so 2 is the oldest now.
        assert_eq!(limits.admit(2, sender(1), now), Err(Limit::Sender));
        assert_eq!(limits.admit(2, sender(3), now), Ok(()));
        assert_eq!(limits.senders_tracked(), 2);
        assert_eq!(limits.admit(2, sender(1), now), Err(Limit::Sender));
        // 2 was forgotten: it starts again with a full bucket.
        assert_eq!(limits.admit(2, sender(2), now), Ok(()));
    }

    /// Request times as offsets in milliseconds, sorted.
    fn times(max: usize) -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(0_u64..5_000, 0..max).prop_map(|mut times| {
            times.sort_unstable();
            times
        })
    }

    proptest! {
        /// However requests arrive, no more are admitted by time t than the
        /// burst plus the tokens earned by then.
        #[test]
        fn never_more_than_burst_plus_earned(
            per_second in 1_u32..100,
            burst in 1_u32..50,
            times in times(400),
        ) {
            let rate = rate(per_second, burst);
            let start = Instant::now();
            let mut bucket = TokenBucket::full(rate, start);
            let mut admitted = 0_u128;
            for offset in times {
                bucket.refill(rate, start + ms(offset));
                if bucket.tokens() > 0 {
                    bucket.take();
                    admitted += 1;
                }
                let earned = ms(offset).as_nanos() / rate.interval().as_nanos();
                prop_assert!(admitted <= u128::from(burst) + earned);
            }
        }

        /// A sender that keeps to the rate is never limited.
        #[test]
        fn keeping_to_the_rate_is_never_limited(
            per_second in 1_u32..1000,
            burst in 1_u32..50,
            gaps in proptest::collection::vec(0_u32..3, 1..200),
        ) {
            let config = config(rate(per_second, burst), rate(per_second, burst), 8);
            let interval = rate(per_second, burst).interval();
            let mut limits = ReplyLimits::new(&config);
            let mut now = Instant::now();
            for gap in gaps {
                // At least one interval apart.
                now += interval * (1 + gap);
                prop_assert_eq!(limits.admit(2, sender(1), now), Ok(()));
            }
        }

        /// Across any mix of senders, an interface never answers more than
        /// its burst plus what it earned, and the sender table never grows
        /// beyond its size.
        #[test]
        fn the_interface_and_the_table_stay_bounded(
            requests in proptest::collection::vec((0_u32..100, 0_u64..2_000), 0..500),
            capacity in 1_usize..20,
        ) {
            let per_interface = rate(50, 20);
            let mut limits = ReplyLimits::new(&config(per_interface, rate(10, 5), capacity));
            let start = Instant::now();
            let mut requests = requests;
            requests.sort_by_key(|(_, offset)| *offset);
            let mut admitted = 0_u128;
            for (who, offset) in requests {
                if limits.admit(2, sender(who), start + ms(offset)).is_ok() {
                    admitted += 1;
                }
                let earned = ms(offset).as_nanos() / per_interface.interval().as_nanos();
                prop_assert!(admitted <= 20 + earned);
                prop_assert!(limits.senders_tracked() <= capacity);
            }
        }
    }
}

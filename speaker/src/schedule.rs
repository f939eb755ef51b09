//! When to send gratuitous ARP and unsolicited neighbor advertisements: a
//! state machine over explicit time, with no clock and no sleeping.
//!
//! On becoming owner of an IP ([`Schedule::take_over`]) the first packet is
//! due at once; then come paced repeats, because a single packet can be lost
//! (a switch still learning the port, a busy receiver) and a client that
//! missed it keeps sending to the dead node until its neighbour entry
//! expires. The default repeats follow the first packet by 250 ms, 500 ms,
//! 1 s, 2 s and 4 s: dense while clients are most likely to hold the stale
//! entry, done after 4 s. An optional periodic refresh (off by default)
//! re-announces owned IPs forever, for networks whose caches outlive that.
//!
//! A global token bucket caps the rate, so that taking over many IPs at once
//! does not trip a switch's ARP policer. Under the cap, **first packets go
//! before any repeat**: after a takeover of 1,000 IPs every IP is announced
//! once before any is announced twice. The default (1,000 per second, burst
//! of 1,000) lets the first packets of 1,000 IPs out at once.
//!
//! The unit is an announcement of one IP. The announcer turns it into
//! packets: for IPv4 both gratuitous ARP forms, on each announcing interface.
//! Size the cap with that in mind.
//!
//! An interface that comes back (carrier restored, a socket reopened, a new
//! address) missed what was sent on it meanwhile: [`Schedule::reannounce`]
//! restarts the first announcement and the repeats of an IP on that
//! interface alone ([`Scope::Interface`]), under the same cap, while the
//! IP's schedule on its other interfaces goes on undisturbed.
//!
//! The driver calls [`Schedule::due`] with the current time, sends what it
//! returns, and sleeps until [`Schedule::next_wakeup`] (or until ownership
//! changes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// How announcements are paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// When repeats follow the first announcement, as offsets from it, in
    /// ascending order.
    pub repeats: Vec<Duration>,
    /// Period of the re-announcement after the last repeat; `None` (the
    /// default) stops after the repeats.
    pub refresh: Option<Duration>,
    /// Sustained cap on announcements per second, over all IPs.
    pub per_second: NonZeroU32,
    /// How many announcements may go out back to back after a quiet period.
    pub burst: NonZeroU32,
}

/// The default cap: sustained announcements per second and burst.
const DEFAULT_RATE: NonZeroU32 = match NonZeroU32::new(1000) {
    Some(rate) => rate,
    None => NonZeroU32::MIN,
};

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            repeats: [250, 500, 1000, 2000, 4000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            refresh: None,
            per_second: DEFAULT_RATE,
            burst: DEFAULT_RATE,
        }
    }
}

/// One announcement to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Announcement {
    /// The IP to announce.
    pub ip: IpAddr,
    /// Where to send it.
    pub scope: Scope,
    /// Where it stands in the IP's schedule (on that scope).
    pub kind: AnnouncementKind,
}

/// The interfaces an announcement goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every interface the IP is announced on.
    All,
    /// Only the interface with this index, which came back after the IP's
    /// schedule had started there.
    Interface(u32),
}

/// What one entry of the schedule announces: an IP on a scope.
type Target = (IpAddr, Scope);

/// Which announcement of an IP this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnouncementKind {
    /// The first one after taking the IP over.
    First,
    /// A repeat; `0` is the first repeat.
    Repeat(usize),
    /// A periodic refresh after all repeats.
    Refresh,
}

/// Announcement state of every IP this node owns.
#[derive(Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    bucket: TokenBucket,
    owned: HashMap<IpAddr, Owned>,
    /// Targets waiting for their first announcement, in takeover (or
    /// re-announcement) order.
    firsts: VecDeque<Target>,
    /// Later announcements by due time; the sequence number keeps equal
    /// times in the order they were scheduled.
    timers: BTreeMap<(Instant, u64), Target>,
    next_sequence: u64,
}

/// The schedules of one owned IP.
#[derive(Debug)]
struct Owned {
    /// On every interface, from the takeover on.
    all: Entry,
    /// Restarted on single interfaces, until their repeats are done.
    interfaces: BTreeMap<u32, Entry>,
}

impl Owned {
    fn entry_mut(&mut self, scope: Scope) -> Option<&mut Entry> {
        match scope {
            Scope::All => Some(&mut self.all),
            Scope::Interface(index) => self.interfaces.get_mut(&index),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// When the first announcement went out; `None` while it waits.
    first_sent: Option<Instant>,
    /// The pending timer, if any, and what it will send.
    timer: Option<((Instant, u64), AnnouncementKind)>,
}

impl Schedule {
    /// An empty schedule with a full token bucket.
    #[must_use]
    pub fn new(config: ScheduleConfig) -> Self {
        let bucket = TokenBucket::new(config.per_second, config.burst);
        Self {
            config,
            bucket,
            owned: HashMap::new(),
            firsts: VecDeque::new(),
            timers: BTreeMap::new(),
            next_sequence: 0,
        }
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Starts announcing `ip`, which this node now owns: its first
    /// announcement is due at once. Returns `false`, changing nothing, when
    /// the IP is already owned.
    pub fn take_over(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.owned.contains_key(&ip) {
            return false;
        }
        // Start the bucket's clock so next_wakeup can answer right away.
        self.bucket.refill(now);
        self.owned.insert(
            ip,
            Owned {
                all: Entry::waiting(),
                interfaces: BTreeMap::new(),
            },
        );
        self.firsts.push_back((ip, Scope::All));
        true
    }

    /// Announces the owned `ip` afresh on the interface with index
    /// `interface` only: a first announcement at once (ahead of due
    /// repeats, like a takeover's), then the repeats, then nothing (the
    /// IP's refresh, if any, already covers every interface). The IP's
    /// schedule elsewhere is untouched. A re-announcement already running
    /// on that interface starts over.
    ///
    /// Returns `false`, changing nothing, when the IP is not owned. While
    /// the IP's own first announcement still waits, it will reach the
    /// interface anyway and nothing is added.
    pub fn reannounce(&mut self, ip: IpAddr, interface: u32, now: Instant) -> bool {
        let Some(owned) = self.owned.get_mut(&ip) else {
            return false;
        };
        if owned.all.first_sent.is_none() {
            return true;
        }
        let target = (ip, Scope::Interface(interface));
        match owned.interfaces.insert(interface, Entry::waiting()) {
            Some(Entry {
                first_sent: None, ..
            }) => {
                // Already waiting for its first announcement: keep its place.
                return true;
            }
            Some(Entry {
                timer: Some((key, _)),
                ..
            }) => {
                self.timers.remove(&key);
            }
            _ => {}
        }
        self.bucket.refill(now);
        self.firsts.push_back(target);
        true
    }

    /// Stops announcing `ip`, which this node no longer owns; nothing more
    /// is sent for it. Returns `false` when it was not owned.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        let Some(owned) = self.owned.remove(&ip) else {
            return false;
        };
        let mut waiting = false;
        for entry in std::iter::once(&owned.all).chain(owned.interfaces.values()) {
            match entry.timer {
                Some((key, _)) => {
                    self.timers.remove(&key);
                }
                None if entry.first_sent.is_none() => waiting = true,
                None => {}
            }
        }
        if waiting {
            self.firsts.retain(|(target, _)| *target != ip);
        }
        true
    }

    /// Whether `ip` is owned (taken over and not released).
    #[must_use]
    pub fn is_owned(&self, ip: &IpAddr) -> bool {
        self.owned.contains_key(ip)
    }

    /// The owned IPs, in no particular order.
    pub fn owned(&self) -> impl Iterator<Item = &IpAddr> {
        self.owned.keys()
    }

    /// The announcements to send at `now`, first announcements first, then
    /// due repeats and refreshes by due time, as many as the cap allows.
    pub fn due(&mut self, now: Instant) -> Vec<Announcement> {
        self.bucket.refill(now);
        let mut out = Vec::new();
        while let Some(&target) = self.firsts.front() {
            if !self.bucket.try_take() {
                // Repeats wait until every first announcement is out.
                return out;
            }
            self.firsts.pop_front();
            if let Some(entry) = self.entry_mut(target) {
                entry.first_sent = Some(now);
            }
            let (ip, scope) = target;
            out.push(Announcement {
                ip,
                scope,
                kind: AnnouncementKind::First,
            });
            self.schedule_after(target, AnnouncementKind::First, now);
        }
        while let Some((&(at, sequence), &target)) = self.timers.first_key_value() {
            if at > now || !self.bucket.try_take() {
                break;
            }
            self.timers.remove(&(at, sequence));
            let kind = self
                .entry_mut(target)
                .and_then(|entry| entry.timer.take())
                .map(|(_, kind)| kind);
            if let Some(kind) = kind {
                let (ip, scope) = target;
                out.push(Announcement { ip, scope, kind });
                self.schedule_after(target, kind, now);
            }
        }
        out
    }

    /// When [`due`](Self::due) will next have something to return, if ever
    /// without new takeovers. May be in the past: call `due` at once then.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Instant> {
        let token = self.bucket.next_token()?;
        if !self.firsts.is_empty() {
            return Some(token);
        }
        let (&(at, _), _) = self.timers.first_key_value()?;
        Some(at.max(token))
    }

    fn entry_mut(&mut self, (ip, scope): Target) -> Option<&mut Entry> {
        self.owned.get_mut(&ip)?.entry_mut(scope)
    }

    /// Arms the timer for what follows `sent`, sent at `now`. An interface's
    /// re-announcement ends after its repeats and is forgotten.
    fn schedule_after(&mut self, target: Target, sent: AnnouncementKind, now: Instant) {
        let refresh = match target.1 {
            Scope::All => self.config.refresh,
            Scope::Interface(_) => None,
        };
        // Borrow the field, not `self`: the config and the timers are used too.
        let Some(entry) = self
            .owned
            .get_mut(&target.0)
            .and_then(|owned| owned.entry_mut(target.1))
        else {
            return;
        };
        let next_repeat = match sent {
            AnnouncementKind::First => 0,
            AnnouncementKind::Repeat(n) => n + 1,
            AnnouncementKind::Refresh => usize::MAX,
        };
        let next = match (self.config.repeats.get(next_repeat), entry.first_sent) {
            // Offsets count from the first announcement; a repeat the cap
            // delayed past the next one's time makes that one due at once.
            (Some(offset), Some(first)) => Some((
                (first + *offset).max(now),
                AnnouncementKind::Repeat(next_repeat),
            )),
            _ => refresh.map(|period| (now + period, AnnouncementKind::Refresh)),
        };
        let Some((at, kind)) = next else {
            entry.timer = None;
            if let (ip, Scope::Interface(index)) = target
                && let Some(owned) = self.owned.get_mut(&ip)
            {
                owned.interfaces.remove(&index);
            }
            return;
        };
        let key = (at, self.next_sequence);
        self.next_sequence += 1;
        entry.timer = Some((key, kind));
        self.timers.insert(key, target);
    }
}

impl Entry {
    fn waiting() -> Self {
        Self {
            first_sent: None,
            timer: None,
        }
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self::new(ScheduleConfig::default())
    }
}

/// Nanoseconds in a second: one token is this many units of bucket level,
/// so that refilling is exact integer arithmetic (`rate` units per ns).
const UNITS_PER_TOKEN: u128 = 1_000_000_000;

/// A token bucket over explicit time, starting full.
#[derive(Debug)]
struct TokenBucket {
    per_second: u128,
    capacity: u128,
    level: u128,
    updated: Option<Instant>,
}

impl TokenBucket {
    fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let capacity = u128::from(burst.get()) * UNITS_PER_TOKEN;
        Self {
            per_second: u128::from(per_second.get()),
            capacity,
            level: capacity,
            updated: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(updated) = self.updated {
            // A `now` earlier than the last one adds nothing.
            let elapsed = now.saturating_duration_since(updated).as_nanos();
            self.level = self
                .level
                .saturating_add(elapsed.saturating_mul(self.per_second))
                .min(self.capacity);
            self.updated = Some(updated.max(now));
        } else {
            self.updated = Some(now);
        }
    }

    fn try_take(&mut self) -> bool {
        if self.level >= UNITS_PER_TOKEN {
            self.level -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// When the next token is available; `None` before the first refill.
    fn next_token(&self) -> Option<Instant> {
        let updated = self.updated?;
        let missing = UNITS_PER_TOKEN.saturating_sub(self.level);
        let nanos = missing.div_ceil(self.per_second);
        Some(updated + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + n))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(per_second: u32, burst: u32) -> ScheduleConfig {
        ScheduleConfig {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            ..ScheduleConfig::default()
        }
    }

    /// Runs the schedule from `start` by following `next_wakeup` until it
    /// returns nothing or `until`; returns every announcement with its time.
    fn drive(
        schedule: &mut Schedule,
        start: Instant,
        until: Instant,
    ) -> Vec<(Instant, Announcement)> {
        let mut out = Vec::new();
        let mut now = start;
        while now <= until {
            for a in schedule.due(now) {
                out.push((now, a));
            }
            match schedule.next_wakeup() {
                Some(next) => now = next.max(now + Duration::from_nanos(1)),
                None => break,
            }
        }
        out
    }

    #[test]
    fn default_schedule_of_one_ip() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        assert!(schedule.take_over(ip(1), t0));
        assert_eq!(schedule.next_wakeup(), Some(t0));
        let sent = drive(&mut schedule, t0, t0 + Duration::from_secs(60));
        let expected = [
            (0, AnnouncementKind::First),
            (250, AnnouncementKind::Repeat(0)),
            (500, AnnouncementKind::Repeat(1)),
            (1000, AnnouncementKind::Repeat(2)),
            (2000, AnnouncementKind::Repeat(3)),
            (4000, AnnouncementKind::Repeat(4)),
        ];
        let got: Vec<(Duration, AnnouncementKind)> =
            sent.iter().map(|(t, a)| (*t - t0, a.kind)).collect();
        let want: Vec<(Duration, AnnouncementKind)> =
            expected.iter().map(|(m, k)| (ms(*m), *k)).collect();
        assert_eq!(got, want);
        assert_eq!(schedule.next_wakeup(), None);
        assert!(schedule.is_owned(&ip(1)));
    }

    #[test]
    fn refresh_follows_the_repeats_forever() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(ScheduleConfig {
            repeats: vec![ms(100)],
            refresh: Some(Duration::from_secs(30)),
            ..ScheduleConfig::default()
        });
        schedule.take_over(ip(1), t0);
        let sent = drive(&mut schedule, t0, t0 + Duration::from_secs(91));
        let got: Vec<(Duration, AnnouncementKind)> =
            sent.iter().map(|(t, a)| (*t - t0, a.kind)).collect();
        assert_eq!(
            got,
            vec![
                (ms(0), AnnouncementKind::First),
                (ms(100), AnnouncementKind::Repeat(0)),
                (ms(30_100), AnnouncementKind::Refresh),
                (ms(60_100), AnnouncementKind::Refresh),
                (ms(90_100), AnnouncementKind::Refresh),
            ]
        );
        assert!(schedule.next_wakeup().is_some());
    }

    #[test]
    fn release_cancels_everything() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.take_over(ip(1), t0);
        schedule.take_over(ip(2), t0);
        assert_eq!(schedule.due(t0).len(), 2);
        assert!(schedule.release(ip(1)));
        assert!(!schedule.release(ip(1)));
        let sent = drive(&mut schedule, t0, t0 + Duration::from_secs(10));
        assert!(sent.iter().all(|(_, a)| a.ip == ip(2)));
        assert_eq!(sent.len(), 5);
        assert!(!schedule.is_owned(&ip(1)));
    }

    #[test]
    fn release_before_the_first_announcement_sends_nothing() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.take_over(ip(1), t0);
        schedule.release(ip(1));
        assert_eq!(schedule.next_wakeup(), None);
        assert!(schedule.due(t0).is_empty());
    }

    #[test]
    fn taking_over_twice_keeps_the_schedule() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        assert!(schedule.take_over(ip(1), t0));
        schedule.due(t0);
        assert!(!schedule.take_over(ip(1), t0 + ms(10)));
        assert!(schedule.due(t0 + ms(10)).is_empty());
        assert_eq!(schedule.next_wakeup(), Some(t0 + ms(250)));
    }

    #[test]
    fn taking_over_again_after_release_starts_afresh() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.take_over(ip(1), t0);
        schedule.due(t0);
        schedule.release(ip(1));
        schedule.take_over(ip(1), t0 + ms(100));
        let sent = schedule.due(t0 + ms(100));
        assert_eq!(
            sent,
            vec![Announcement {
                ip: ip(1),
                scope: Scope::All,
                kind: AnnouncementKind::First
            }]
        );
        assert_eq!(schedule.next_wakeup(), Some(t0 + ms(350)));
    }

    #[test]
    fn thousand_ips_announced_at_once_with_defaults() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        for n in 0..1000 {
            schedule.take_over(ip(n), t0);
        }
        let first = schedule.due(t0);
        assert_eq!(first.len(), 1000);
        assert!(first.iter().all(|a| a.kind == AnnouncementKind::First));
        let order: Vec<IpAddr> = first.iter().map(|a| a.ip).collect();
        assert_eq!(order, (0..1000).map(ip).collect::<Vec<_>>());
    }

    #[test]
    fn thousand_ips_under_a_tight_cap_get_first_packets_before_repeats() {
        let (per_second, burst) = (2000_u32, 100_u32);
        let t0 = Instant::now();
        let mut schedule = Schedule::new(config(per_second, burst));
        for n in 0..1000 {
            schedule.take_over(ip(n), t0);
        }
        let sent = drive(&mut schedule, t0, t0 + Duration::from_secs(10));
        assert_eq!(sent.len(), 1000 * 6);
        // First announcements, in takeover order, before any repeat.
        let firsts: Vec<IpAddr> = sent[..1000].iter().map(|(_, a)| a.ip).collect();
        assert_eq!(firsts, (0..1000).map(ip).collect::<Vec<_>>());
        assert!(
            sent[..1000]
                .iter()
                .all(|(_, a)| a.kind == AnnouncementKind::First)
        );
        assert!(
            sent[1000..]
                .iter()
                .all(|(_, a)| a.kind != AnnouncementKind::First)
        );
        // 100 at once, then 2 per ms: the last first packet leaves at 450 ms.
        assert_eq!(sent[99].0, t0);
        assert_eq!(sent[999].0 - t0, ms(450));
        assert_within_cap(&sent, t0, per_second, burst);
    }

    fn assert_within_cap(
        sent: &[(Instant, Announcement)],
        t0: Instant,
        per_second: u32,
        burst: u32,
    ) {
        // Over any window starting at a send time, at most burst + rate × span.
        for (i, (start, _)) in sent.iter().enumerate() {
            for (j, (end, _)) in sent.iter().enumerate().skip(i) {
                let span = (*end - *start).as_nanos();
                let allowed = u128::from(burst) + span * u128::from(per_second) / 1_000_000_000;
                assert!(
                    (j - i + 1) as u128 <= allowed,
                    "{} sends between {:?} and {:?}",
                    j - i + 1,
                    *start - t0,
                    *end - t0
                );
            }
        }
    }

    #[test]
    fn a_new_takeover_goes_ahead_of_due_repeats() {
        // One token at a time, ten per second.
        let t0 = Instant::now();
        let mut schedule = Schedule::new(config(10, 1));
        schedule.take_over(ip(1), t0);
        assert_eq!(schedule.due(t0).len(), 1);
        // At 250 ms ip(1)'s first repeat is due, but ip(2) just arrived.
        schedule.take_over(ip(2), t0 + ms(250));
        assert_eq!(
            schedule.due(t0 + ms(250)),
            vec![Announcement {
                ip: ip(2),
                scope: Scope::All,
                kind: AnnouncementKind::First
            }]
        );
        assert_eq!(schedule.next_wakeup(), Some(t0 + ms(350)));
        assert_eq!(
            schedule.due(t0 + ms(350)),
            vec![Announcement {
                ip: ip(1),
                scope: Scope::All,
                kind: AnnouncementKind::Repeat(0)
            }]
        );
    }

    #[test]
    fn ipv6_and_ipv4_are_scheduled_alike() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc8));
        schedule.take_over(ip(1), t0);
        schedule.take_over(v6, t0);
        let ips: Vec<IpAddr> = schedule.due(t0).iter().map(|a| a.ip).collect();
        assert_eq!(ips, vec![ip(1), v6]);
    }

    /// What `sent` holds from `from` on, as (ms after `t0`, ip, scope, kind).
    fn timeline(
        sent: &[(Instant, Announcement)],
        t0: Instant,
    ) -> Vec<(u128, IpAddr, Scope, AnnouncementKind)> {
        sent.iter()
            .map(|(t, a)| ((*t - t0).as_millis(), a.ip, a.scope, a.kind))
            .collect()
    }

    #[test]
    fn a_flapped_interface_alone_gets_its_schedule_again() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.take_over(ip(1), t0);
        schedule.take_over(ip(2), t0);
        let before = drive(&mut schedule, t0, t0 + ms(1000));
        assert_eq!(before.len(), 2 * 4, "first and three repeats each");
        // Interface 3 comes back at 1.1 s; ip(1) is announced on it.
        let flap = t0 + ms(1100);
        assert!(schedule.reannounce(ip(1), 3, flap));
        let after = drive(&mut schedule, flap, t0 + Duration::from_secs(60));
        let on_3 = Scope::Interface(3);
        use AnnouncementKind::{First, Repeat};
        assert_eq!(
            timeline(&after, t0),
            vec![
                (1100, ip(1), on_3, First),
                (1350, ip(1), on_3, Repeat(0)),
                (1600, ip(1), on_3, Repeat(1)),
                (2000, ip(1), Scope::All, Repeat(3)),
                (2000, ip(2), Scope::All, Repeat(3)),
                (2100, ip(1), on_3, Repeat(2)),
                (3100, ip(1), on_3, Repeat(3)),
                (4000, ip(1), Scope::All, Repeat(4)),
                (4000, ip(2), Scope::All, Repeat(4)),
                (5100, ip(1), on_3, Repeat(4)),
            ],
            "the other interfaces and the other IP keep their own schedule"
        );
        assert_eq!(schedule.next_wakeup(), None);
        assert!(schedule.is_owned(&ip(1)));
    }

    #[test]
    fn reannouncing_needs_an_owned_ip_whose_first_announcement_is_out() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        assert!(!schedule.reannounce(ip(1), 3, t0), "not owned");
        assert_eq!(schedule.next_wakeup(), None);
        schedule.take_over(ip(1), t0);
        // The takeover's first announcement still waits and will reach
        // interface 3 anyway: nothing is added.
        assert!(schedule.reannounce(ip(1), 3, t0));
        let sent = schedule.due(t0);
        assert_eq!(
            sent,
            vec![Announcement {
                ip: ip(1),
                scope: Scope::All,
                kind: AnnouncementKind::First
            }]
        );
    }

    #[test]
    fn reannouncing_twice_starts_over_and_release_cancels_it() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(ScheduleConfig {
            repeats: vec![ms(100), ms(200)],
            ..ScheduleConfig::default()
        });
        schedule.take_over(ip(1), t0);
        schedule.due(t0);
        assert!(schedule.reannounce(ip(1), 3, t0 + ms(10)));
        assert!(schedule.reannounce(ip(1), 3, t0 + ms(10)), "still waiting");
        assert_eq!(schedule.due(t0 + ms(10)).len(), 1, "one first, not two");
        // The interface flaps again before its first repeat.
        assert!(schedule.reannounce(ip(1), 3, t0 + ms(50)));
        let sent = drive(&mut schedule, t0 + ms(50), t0 + ms(1000));
        let on_3 = Scope::Interface(3);
        use AnnouncementKind::{First, Repeat};
        assert_eq!(
            timeline(&sent, t0),
            vec![
                (50, ip(1), on_3, First),
                (100, ip(1), Scope::All, Repeat(0)),
                (150, ip(1), on_3, Repeat(0)),
                (200, ip(1), Scope::All, Repeat(1)),
                (250, ip(1), on_3, Repeat(1)),
            ]
        );
        // Released while a re-announcement waits: nothing more at all.
        schedule.reannounce(ip(1), 4, t0 + ms(1000));
        schedule.reannounce(ip(1), 5, t0 + ms(1000));
        schedule.due(t0 + ms(1000));
        schedule.reannounce(ip(1), 5, t0 + ms(1010));
        assert!(schedule.release(ip(1)));
        assert_eq!(schedule.next_wakeup(), None);
        assert!(schedule.due(t0 + ms(5000)).is_empty());
    }

    #[test]
    fn a_reannouncement_stops_after_its_repeats_even_with_refresh_on() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(ScheduleConfig {
            repeats: vec![ms(100)],
            refresh: Some(Duration::from_secs(30)),
            ..ScheduleConfig::default()
        });
        schedule.take_over(ip(1), t0);
        assert_eq!(drive(&mut schedule, t0, t0 + ms(999)).len(), 2);
        schedule.reannounce(ip(1), 3, t0 + ms(1000));
        let sent = drive(&mut schedule, t0 + ms(1000), t0 + Duration::from_secs(61));
        use AnnouncementKind::{First, Refresh, Repeat};
        assert_eq!(
            timeline(&sent, t0),
            vec![
                (1000, ip(1), Scope::Interface(3), First),
                (1100, ip(1), Scope::Interface(3), Repeat(0)),
                (30_100, ip(1), Scope::All, Refresh),
                (60_100, ip(1), Scope::All, Refresh),
            ],
            "the IP's refresh covers every interface; one is enough"
        );
    }

    #[test]
    fn reannouncements_share_the_cap_and_go_ahead_of_repeats() {
        // One token at a time, ten per second.
        let t0 = Instant::now();
        let mut schedule = Schedule::new(config(10, 1));
        schedule.take_over(ip(1), t0);
        schedule.take_over(ip(2), t0);
        assert_eq!(schedule.due(t0).len(), 1);
        assert_eq!(schedule.due(t0 + ms(100)).len(), 1);
        // At 250 ms ip(1)'s first repeat is due, but interface 3 came back.
        schedule.reannounce(ip(2), 3, t0 + ms(250));
        assert_eq!(
            schedule.due(t0 + ms(250)),
            vec![Announcement {
                ip: ip(2),
                scope: Scope::Interface(3),
                kind: AnnouncementKind::First
            }]
        );
        assert_eq!(schedule.next_wakeup(), Some(t0 + ms(350)));
        let sent = drive(&mut schedule, t0 + ms(350), t0 + Duration::from_secs(10));
        let mut all = vec![(
            t0,
            Announcement {
                ip: ip(1),
                scope: Scope::All,
                kind: AnnouncementKind::First,
            },
        )];
        all.extend(sent);
        assert_within_cap(&all, t0, 10, 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        TakeOver(u32),
        Release(u32),
        Reannounce(u32, u32),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0_u32..30).prop_map(Op::TakeOver),
            (0_u32..30).prop_map(Op::Release),
            (0_u32..30, 1_u32..4).prop_map(|(n, interface)| Op::Reannounce(n, interface)),
            (0_u64..3000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn only_owned_ips_are_announced_within_the_cap(
            ops in proptest::collection::vec(op(), 1..200),
            per_second in 1_u32..50,
            burst in 1_u32..10,
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut schedule = Schedule::new(config(per_second, burst));
            let mut owned: HashSet<IpAddr> = HashSet::new();
            let mut announced_first: HashSet<(IpAddr, Scope)> = HashSet::new();
            let mut sent = Vec::new();
            for op in ops {
                match op {
                    Op::TakeOver(n) => {
                        prop_assert_eq!(schedule.take_over(ip(n), now), owned.insert(ip(n)));
                    }
                    Op::Release(n) => {
                        prop_assert_eq!(schedule.release(ip(n)), owned.remove(&ip(n)));
                        announced_first.retain(|(first, _)| *first != ip(n));
                    }
                    Op::Reannounce(n, interface) => {
                        prop_assert_eq!(
                            schedule.reannounce(ip(n), interface, now),
                            owned.contains(&ip(n))
                        );
                        // A restarted interface announces a first again.
                        announced_first.remove(&(ip(n), Scope::Interface(interface)));
                    }
                    Op::Advance(millis) => now += ms(millis),
                }
                for a in schedule.due(now) {
                    prop_assert!(owned.contains(&a.ip));
                    if a.kind == AnnouncementKind::First {
                        prop_assert!(announced_first.insert((a.ip, a.scope)));
                    } else {
                        prop_assert!(announced_first.contains(&(a.ip, a.scope)));
                    }
                    if let Scope::Interface(_) = a.scope {
                        prop_assert!(a.kind != AnnouncementKind::Refresh);
                    }
                    sent.push((now, a));
                }
                // After `due` has sent all it could, the next wakeup is later.
                prop_assert!(schedule.next_wakeup().is_none_or(|wakeup| wakeup > now));
            }
            assert_within_cap(&sent, t0, per_second, burst);
        }
    }
}

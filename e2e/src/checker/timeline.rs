//! What the client saw of one VIP around a fault, computed from a
//! [`Recording`]: probe rounds and who answered each, the owners in turn
//! (moves, ping-pong), time with several MACs answering, the longest gap
//! between ping replies, and how soon after the fault one MAC answered alone
//! with the status and the client's neighbour entry agreeing. Pure: tested
//! with made-up recordings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::capture::{Frame, FrameKind, Stamp};

/// A value observed at a point in time: the MAC the client's neighbour entry
/// holds for a VIP, or the MAC of the node its `ServiceL2Status` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub at: Stamp,
    /// The MAC (lowercase), or `None` when there was none.
    pub mac: Option<String>,
}

/// Everything the checker collected in the client namespace.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// The sender IP of the checker's own broadcast ARP requests, which open
    /// probe rounds; requests from anyone else (a flood) do not.
    pub prober: Option<IpAddr>,
    /// ARP and neighbor advertisement frames, in capture order.
    pub frames: Vec<Frame>,
    /// Times of ping replies, per VIP.
    pub replies: BTreeMap<IpAddr, Vec<Stamp>>,
    /// The client's neighbour entry, per VIP.
    pub neighbours: BTreeMap<IpAddr, Vec<Sample>>,
    /// The MAC of the node `ServiceL2Status` names, per VIP.
    pub statuses: BTreeMap<IpAddr, Vec<Sample>>,
}

/// One probe round: from a broadcast ARP request of the checker to the next.
/// Every node that claims the IP answers a broadcast request, so the MACs
/// answering in a round are the claimants at that time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// When the request went out.
    pub at: Stamp,
    /// When the next one went out (or the end of what was looked at).
    pub until: Stamp,
    /// The distinct MACs that claimed the IP during the round (replies,
    /// gratuitous ARPs, advertisements), in the order first seen.
    pub answers: Vec<String>,
}

/// The span a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the fault started.
    pub start: Stamp,
    /// When the fault ended (healed, resumed, restarted…).
    pub end: Stamp,
    /// The end of the observation after it.
    pub until: Stamp,
}

/// How the VIP settled after the fault ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settle {
    /// The MACs answering in the last probe round of the window.
    pub last_answers: Vec<String>,
    /// Since how long after the fault's end the last round's MAC (when it
    /// answered alone) has been the only MAC answering.
    pub alone_after: Option<Duration>,
    /// The MAC of the node the status names at the end of the window.
    pub status: Option<String>,
    /// Since how long after the fault's end the status has named the MAC
    /// answering alone (`None` if it does not at the end).
    pub status_after: Option<Duration>,
    /// The client's neighbour entry at the end of the window.
    pub neighbour: Option<String>,
    /// Since how long after the fault's end the client's entry has pointed at
    /// the MAC answering alone (`None` if it does not at the end).
    pub neighbour_after: Option<Duration>,
}

/// What the client saw of one VIP over a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The VIP.
    pub vip: IpAddr,
    /// The span covered.
    pub window: Window,
    /// The owner when the window started (if any), then each new owner: a
    /// round's answers that no longer include the owner make its earliest
    /// answer the owner.
    pub owners: Vec<String>,
    /// Changes of owner within the window.
    pub moves: usize,
    /// Whether an owner came back after another had taken over (A→B→A).
    pub ping_pong: bool,
    /// Time with two or more MACs answering.
    pub overlap: Duration,
    /// Time in probe rounds nobody answered.
    pub unanswered: Duration,
    /// Every MAC that claimed the IP in the window.
    pub announcers: BTreeSet<String>,
    /// The longest gap between consecutive ping replies (or between the
    /// window's edges and the replies nearest them).
    pub longest_outage: Duration,
    /// Ping replies in the window.
    pub replies: usize,
    /// Probe rounds in the window.
    pub rounds: usize,
    /// How it settled after the fault.
    pub settle: Settle,
}

impl Recording {
    /// The probe rounds for `vip` up to `until`.
    pub fn rounds(&self, vip: IpAddr, until: Stamp) -> Vec<Round> {
        let mut rounds: Vec<Round> = Vec::new();
        for frame in self.frames.iter().filter(|f| f.ip == vip && f.at <= until) {
            match &frame.kind {
                FrameKind::Request { sender, broadcast } => {
                    if *broadcast && Some(*sender) == self.prober {
                        if let Some(last) = rounds.last_mut() {
                            last.until = frame.at;
                        }
                        rounds.push(Round {
                            at: frame.at,
                            until,
                            answers: Vec::new(),
                        });
                    }
                }
                _ => {
                    if let Some(last) = rounds.last_mut()
                        && !last.answers.contains(&frame.mac)
                    {
                        last.answers.push(frame.mac.clone());
                    }
                }
            }
        }
        rounds
    }

    /// What the client saw of `vip` over `window`.
    pub fn report(&self, vip: IpAddr, window: Window) -> Report {
        let rounds = self.rounds(vip, window.until);
        let changes = owner_changes(&rounds);
        let mut owners: Vec<String> = changes
            .iter()
            .rev()
            .find(|(at, _)| *at < window.start)
            .map(|(_, mac)| mac.clone())
            .into_iter()
            .collect();
        owners.extend(
            changes
                .iter()
                .filter(|(at, _)| *at >= window.start)
                .map(|(_, mac)| mac.clone()),
        );
        // The first owner is a move only if it replaced one.
        let moves = owners.len().saturating_sub(1);
        let ping_pong = {
            let mut seen = BTreeSet::new();
            owners.iter().any(|mac| !seen.insert(mac))
        };
        let in_window: Vec<&Round> = rounds
            .iter()
            .filter(|r| r.until > window.start && r.at < window.until)
            .collect();
        let span = |r: &Round| {
            r.until
                .min(window.until)
                .saturating_sub(r.at.max(window.start))
        };
        let overlap = in_window
            .iter()
            .filter(|r| r.answers.len() >= 2)
            .map(|r| span(r))
            .sum();
        let unanswered = in_window
            .iter()
            .filter(|r| r.answers.is_empty())
            .map(|r| span(r))
            .sum();
        let announcers = self
            .frames
            .iter()
            .filter(|f| f.ip == vip && f.is_claim())
            .filter(|f| f.at >= window.start && f.at <= window.until)
            .map(|f| f.mac.clone())
            .collect();
        let replies = self.replies.get(&vip).map(Vec::as_slice).unwrap_or(&[]);
        Report {
            vip,
            window,
            owners,
            moves,
            ping_pong,
            overlap,
            unanswered,
            announcers,
            longest_outage: longest_gap(replies, window.start, window.until),
            replies: replies
                .iter()
                .filter(|t| **t >= window.start && **t <= window.until)
                .count(),
            rounds: in_window.len(),
            settle: self.settle(vip, &rounds, window),
        }
    }

    fn settle(&self, vip: IpAddr, rounds: &[Round], window: Window) -> Settle {
        let after: Vec<&Round> = rounds
            .iter()
            .filter(|r| r.until > window.end && r.at < window.until)
            .collect();
        let last_answers = after.last().map(|r| r.answers.clone()).unwrap_or_default();
        let alone = match last_answers.as_slice() {
            [mac] => Some(mac.clone()),
            _ => None,
        };
        let alone_after = alone.as_ref().map(|mac| {
            after
                .iter()
                .rev()
                .find(|r| r.answers.as_slice() != std::slice::from_ref(mac))
                .map(|r| r.until.saturating_sub(window.end))
                .unwrap_or_default()
        });
        let (status, status_after) = settled_samples(
            self.statuses.get(&vip).map(Vec::as_slice).unwrap_or(&[]),
            alone.as_deref(),
            window,
        );
        let (neighbour, neighbour_after) = settled_samples(
            self.neighbours.get(&vip).map(Vec::as_slice).unwrap_or(&[]),
            alone.as_deref(),
            window,
        );
        Settle {
            last_answers,
            alone_after,
            status,
            status_after,
            neighbour,
            neighbour_after,
        }
    }
}

/// Each change of owner: when a round with answers no longer includes the
/// current owner, its earliest answer becomes the owner. When the owner was
/// silent in the previous round and another MAC answers before it in this
/// one, that MAC took over and the owner came back within the round.
fn owner_changes(rounds: &[Round]) -> Vec<(Stamp, String)> {
    let mut current: Option<&String> = None;
    let mut previous: &[String] = &[];
    let mut changes = Vec::new();
    for round in rounds {
        let answers = round.answers.as_slice();
        let Some(first) = answers.first() else {
            previous = answers;
            continue;
        };
        match current {
            Some(owner) if answers.contains(owner) => {
                if first != owner && !previous.contains(owner) {
                    changes.push((round.at, first.clone()));
                    changes.push((round.at, owner.clone()));
                }
            }
            _ => {
                changes.push((round.at, first.clone()));
                current = Some(first);
            }
        }
        previous = answers;
    }
    changes
}

/// The longest gap between consecutive replies within `[start, until]`,
/// counting from the last reply before `start` (or `start`) to the first
/// after it, and from the last reply to `until`.
fn longest_gap(replies: &[Stamp], start: Stamp, until: Stamp) -> Duration {
    let mut previous = replies
        .iter()
        .copied()
        .filter(|t| *t <= start)
        .max()
        .unwrap_or(start);
    let mut longest = Duration::ZERO;
    for t in replies
        .iter()
        .copied()
        .filter(|t| *t > start && *t <= until)
        .chain(std::iter::once(until))
    {
        longest = longest.max(t.saturating_sub(previous));
        previous = previous.max(t);
    }
    longest
}

/// The last sample in the window after the fault and, if it is `mac`, since
/// how long after the fault's end the samples have all been `mac`.
fn settled_samples(
    samples: &[Sample],
    mac: Option<&str>,
    window: Window,
) -> (Option<String>, Option<Duration>) {
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= window.end && s.at <= window.until)
        .collect();
    let last = after.last().and_then(|s| s.mac.clone());
    let Some(mac) = mac.filter(|m| last.as_deref() == Some(*m)) else {
        return (last, None);
    };
    let since = after
        .iter()
        .rposition(|s| s.mac.as_deref() != Some(mac))
        .and_then(|i| after.get(i + 1))
        .map_or(window.end, |s| s.at);
    (last, Some(since.saturating_sub(window.end)))
}

/// What a fault may do to a VIP, and how soon it must be over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// At most this many changes of owner in the window.
    pub max_moves: Option<usize>,
    /// No owner comes back after another took over.
    pub no_ping_pong: bool,
    /// Within this long after the fault ends exactly one MAC answers, the
    /// status names its node and the client's neighbour entry points at it.
    pub settle_within: Option<Duration>,
    /// No gap between ping replies longer than this.
    pub max_outage: Option<Duration>,
    /// At most this long with several MACs answering.
    pub max_overlap: Option<Duration>,
}

/// How long the settled state must then be seen to hold.
pub const CONFIRM: Duration = Duration::from_secs(1);

impl Expectation {
    /// What every fault must satisfy (SPEC §4 and §9): no ping-pong, and
    /// within 1 s of the fault's end one MAC, named by the status, in the
    /// client's neighbour entry.
    pub fn after_any_fault() -> Self {
        Self {
            max_moves: None,
            no_ping_pong: true,
            settle_within: Some(Duration::from_secs(1)),
            max_outage: None,
            max_overlap: None,
        }
    }

    /// With at most `moves` changes of owner.
    pub fn moves(self, moves: usize) -> Self {
        Self {
            max_moves: Some(moves),
            ..self
        }
    }

    /// With no gap between ping replies longer than `outage`.
    pub fn outage(self, outage: Duration) -> Self {
        Self {
            max_outage: Some(outage),
            ..self
        }
    }

    /// With at most `overlap` of several MACs answering.
    pub fn overlap(self, overlap: Duration) -> Self {
        Self {
            max_overlap: Some(overlap),
            ..self
        }
    }

    /// What `report` breaks of this expectation, each said in words (MACs
    /// shown through `names`).
    pub fn violations(&self, report: &Report, names: &BTreeMap<String, String>) -> Vec<String> {
        let vip = report.vip;
        let name = |mac: &str| display_mac(mac, names);
        let mut out = Vec::new();
        if let Some(max) = self.max_moves
            && report.moves > max
        {
            out.push(format!(
                "{vip}: {} moves (at most {max}): {}",
                report.moves,
                owners_path(&report.owners, names)
            ));
        }
        if self.no_ping_pong && report.ping_pong {
            out.push(format!(
                "{vip}: ownership ping-pong: {}",
                owners_path(&report.owners, names)
            ));
        }
        if let Some(max) = self.max_outage
            && report.longest_outage > max
        {
            out.push(format!(
                "{vip}: longest gap between ping replies {:?} (at most {max:?})",
                report.longest_outage
            ));
        }
        if let Some(max) = self.max_overlap
            && report.overlap > max
        {
            out.push(format!(
                "{vip}: several MACs answered for {:?} (at most {max:?})",
                report.overlap
            ));
        }
        if let Some(within) = self.settle_within {
            let settle = &report.settle;
            let observed = report.window.until.saturating_sub(report.window.end);
            if observed < within + CONFIRM {
                out.push(format!(
                    "{vip}: observed only {observed:?} after the fault ended (need {:?})",
                    within + CONFIRM
                ));
            }
            match settle.last_answers.as_slice() {
                [mac] => {
                    let late = |after: Option<Duration>| after.is_none_or(|a| a > within);
                    if late(settle.alone_after) {
                        out.push(format!(
                            "{vip}: {} answered alone only {:?} after the fault ended (within {within:?})",
                            name(mac),
                            settle.alone_after.unwrap_or_default()
                        ));
                    }
                    if late(settle.status_after) {
                        out.push(format!(
                            "{vip}: {} answers but ServiceL2Status names {} ({})",
                            name(mac),
                            if settle.status_after.is_some() {
                                "another node".to_owned()
                            } else {
                                settle.status.as_deref().map_or("nobody".to_owned(), name)
                            },
                            settle.status_after.map_or("at the end".to_owned(), |a| {
                                format!("until {a:?} after the fault ended")
                            })
                        ));
                    }
                    if late(settle.neighbour_after) {
                        out.push(format!(
                            "{vip}: {} answers but the client's neighbour entry points at {} ({})",
                            name(mac),
                            if settle.neighbour_after.is_some() {
                                "another MAC".to_owned()
                            } else {
                                settle
                                    .neighbour
                                    .as_deref()
                                    .map_or("nothing".to_owned(), name)
                            },
                            settle.neighbour_after.map_or("at the end".to_owned(), |a| {
                                format!("until {a:?} after the fault ended")
                            })
                        ));
                    }
                }
                answers => out.push(format!(
                    "{vip}: at the end {} answer ARP, not exactly one MAC",
                    if answers.is_empty() {
                        "no MACs".to_owned()
                    } else {
                        answers
                            .iter()
                            .map(|m| name(m))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    }
                )),
            }
        }
        out
    }
}

impl Report {
    /// One line for the test's output, MACs shown through `names`.
    pub fn describe(&self, names: &BTreeMap<String, String>) -> String {
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        let after = |d: Option<Duration>| d.map_or("never".to_owned(), ms);
        let settle = &self.settle;
        let mut line = format!(
            "{}: owners {} ({} moves{}), overlap {}, unanswered {}, longest ping gap {} ({} replies, {} rounds)",
            self.vip,
            owners_path(&self.owners, names),
            self.moves,
            if self.ping_pong { ", ping-pong" } else { "" },
            ms(self.overlap),
            ms(self.unanswered),
            ms(self.longest_outage),
            self.replies,
            self.rounds,
        );
        match settle.last_answers.as_slice() {
            [mac] => {
                let _ = write!(
                    line,
                    "; alone: {} after {}, status {} after {}, neighbour {} after {}",
                    display_mac(mac, names),
                    after(settle.alone_after),
                    settle
                        .status
                        .as_deref()
                        .map_or("-".to_owned(), |m| display_mac(m, names)),
                    after(settle.status_after),
                    settle
                        .neighbour
                        .as_deref()
                        .map_or("-".to_owned(), |m| display_mac(m, names)),
                    after(settle.neighbour_after),
                );
            }
            answers => {
                let _ = write!(
                    line,
                    "; at the end answered by [{}]",
                    answers
                        .iter()
                        .map(|m| display_mac(m, names))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if self.announcers.len() > 1 {
            let _ = write!(
                line,
                "; announced by {}",
                self.announcers
                    .iter()
                    .map(|m| display_mac(m, names))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        line
    }
}

fn display_mac(mac: &str, names: &BTreeMap<String, String>) -> String {
    names.get(mac).cloned().unwrap_or_else(|| mac.to_owned())
}

fn owners_path(owners: &[String], names: &BTreeMap<String, String>) -> String {
    if owners.is_empty() {
        return "none".to_owned();
    }
    owners
        .iter()
        .map(|m| display_mac(m, names))
        .collect::<Vec<_>>()
        .join("→")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0a:58:c6:12:00:0b";
    const B: &str = "0a:58:c6:12:00:0c";
    const C: &str = "0a:58:c6:12:00:0d";
    const CLIENT: &str = "0a:58:c6:12:00:64";

    fn vip() -> IpAddr {
        "198.18.0.160".parse().unwrap()
    }

    fn ms(n: u64) -> Stamp {
        Duration::from_millis(1_000_000 + n)
    }

    fn names() -> BTreeMap<String, String> {
        [(A, "node1"), (B, "node2"), (C, "node3")]
            .into_iter()
            .map(|(m, n)| (m.to_owned(), n.to_owned()))
            .collect()
    }

    /// A recording built from probe rounds every 100 ms: `answers[i]` are
    /// the MACs answering round i (each 5 ms after the request), pings every
    /// 16 ms except where no MAC answers, and status and neighbour samples
    /// every 100 ms with the given values.
    fn recording(
        answers: &[&[&str]],
        status: impl Fn(usize) -> Option<&'static str>,
        neighbour: impl Fn(usize) -> Option<&'static str>,
    ) -> Recording {
        let prober: IpAddr = "198.18.0.100".parse().unwrap();
        let mut rec = Recording {
            prober: Some(prober),
            ..Recording::default()
        };
        let mut replies = Vec::new();
        for (i, round) in answers.iter().enumerate() {
            let at = ms(100 * i as u64);
            rec.frames.push(Frame {
                at,
                ip: vip(),
                mac: CLIENT.to_owned(),
                kind: FrameKind::Request {
                    sender: prober,
                    broadcast: true,
                },
            });
            for (k, mac) in round.iter().enumerate() {
                rec.frames.push(Frame {
                    at: at + Duration::from_millis(5 + k as u64),
                    ip: vip(),
                    mac: (*mac).to_owned(),
                    kind: FrameKind::Reply,
                });
            }
            if !round.is_empty() {
                for k in 0..6 {
                    replies.push(at + Duration::from_millis(16 * k));
                }
            }
            let sample = |m: Option<&str>| Sample {
                at: at + Duration::from_millis(50),
                mac: m.map(str::to_owned),
            };
            rec.statuses
                .entry(vip())
                .or_default()
                .push(sample(status(i)));
            rec.neighbours
                .entry(vip())
                .or_default()
                .push(sample(neighbour(i)));
        }
        rec.replies.insert(vip(), replies);
        rec
    }

    fn window(start: u64, end: u64, until: u64) -> Window {
        Window {
            start: ms(start),
            end: ms(end),
            until: ms(until),
        }
    }

    #[test]
    fn a_quiet_owner_gives_a_clean_report() {
        let rounds: Vec<&[&str]> = vec![&[A]; 40];
        let rec = recording(&rounds, |_| Some(A), |_| Some(A));
        let report = rec.report(vip(), window(1000, 1500, 4000));
        assert_eq!(report.owners, vec![A]);
        assert_eq!(report.moves, 0);
        assert!(!report.ping_pong);
        assert_eq!(report.overlap, Duration::ZERO);
        assert_eq!(report.unanswered, Duration::ZERO);
        assert!(report.longest_outage <= Duration::from_millis(20));
        assert_eq!(report.settle.last_answers, vec![A]);
        assert_eq!(report.settle.alone_after, Some(Duration::ZERO));
        assert_eq!(report.settle.status_after, Some(Duration::ZERO));
        assert_eq!(report.settle.neighbour_after, Some(Duration::ZERO));
        assert!(
            Expectation::after_any_fault()
                .moves(0)
                .overlap(Duration::ZERO)
                .violations(&report, &names())
                .is_empty()
        );
    }

    /// The stall the issue reports: the owner stops, a peer takes over, the
    /// owner comes back and both answer, then only the owner answers while
    /// the status and the client still point at the peer.
    #[test]
    fn a_returning_owner_is_ping_pong_with_a_stale_status_and_client() {
        let mut rounds: Vec<&[&str]> = vec![&[A]; 10];
        rounds.extend([&[][..], &[], &[B], &[B, A], &[A, B]]);
        rounds.extend(vec![&[A][..]; 30]);
        let rec = recording(
            &rounds,
            |i| Some(if i >= 12 { B } else { A }),
            |i| Some(if i >= 12 { B } else { A }),
        );
        // The stall: from round 10 to round 13.
        let report = rec.report(vip(), window(1000, 1300, 4500));
        assert_eq!(report.owners, vec![A, B, A]);
        assert_eq!(report.moves, 2);
        assert!(report.ping_pong);
        assert_eq!(report.overlap, Duration::from_millis(200));
        assert_eq!(report.unanswered, Duration::from_millis(200));
        assert!(report.longest_outage >= Duration::from_millis(200));
        assert_eq!(report.announcers.len(), 2);
        assert_eq!(report.settle.last_answers, vec![A]);
        assert_eq!(report.settle.alone_after, Some(Duration::from_millis(200)));
        assert_eq!(report.settle.status.as_deref(), Some(B));
        assert_eq!(report.settle.status_after, None);
        assert_eq!(report.settle.neighbour_after, None);
        let violations = Expectation::after_any_fault()
            .moves(1)
            .violations(&report, &names());
        assert_eq!(violations.len(), 4, "{violations:#?}");
        assert!(violations[0].contains("2 moves") && violations[0].contains("node1→node2→node1"));
        assert!(violations[1].contains("ping-pong"));
        assert!(violations[2].contains("ServiceL2Status names node2"));
        assert!(violations[3].contains("neighbour entry points at node2"));
        let line = report.describe(&names());
        assert!(
            line.contains("node1→node2→node1 (2 moves, ping-pong)"),
            "{line}"
        );
    }

    /// The same, with the peer's takeover and the owner's return in one
    /// probe round: the peer answered first, after the owner had been silent.
    #[test]
    fn a_takeover_and_return_within_one_round_is_ping_pong() {
        let mut rounds: Vec<&[&str]> = vec![&[A]; 10];
        rounds.extend([&[][..], &[], &[B, A]]);
        rounds.extend(vec![&[A][..]; 30]);
        let rec = recording(&rounds, |i| Some(if i >= 12 { B } else { A }), |_| Some(A));
        let report = rec.report(vip(), window(1000, 1300, 4300));
        assert_eq!(report.owners, vec![A, B, A]);
        assert!(report.ping_pong);
        // Both answering in every round, the owner first or not, is overlap
        // and no move.
        let rounds: Vec<&[&str]> = [&[A, B][..], &[B, A]].repeat(20);
        let rec = recording(&rounds, |_| Some(A), |_| Some(A));
        let report = rec.report(vip(), window(1000, 1300, 4000));
        assert_eq!(report.owners, vec![A]);
        assert_eq!(report.moves, 0);
    }

    #[test]
    fn a_clean_takeover_is_one_move_settled_at_once() {
        let mut rounds: Vec<&[&str]> = vec![&[A]; 10];
        rounds.extend([&[][..], &[], &[], &[B]]);
        rounds.extend(vec![&[B][..]; 30]);
        let rec = recording(
            &rounds,
            |i| Some(if i >= 14 { B } else { A }),
            |i| Some(if i >= 13 { B } else { A }),
        );
        // The owner crashed at round 10; the fault "ends" then.
        let report = rec.report(vip(), window(1000, 1000, 4300));
        assert_eq!(report.owners, vec![A, B]);
        assert_eq!(report.moves, 1);
        assert!(!report.ping_pong);
        assert_eq!(report.overlap, Duration::ZERO);
        assert_eq!(report.unanswered, Duration::from_millis(300));
        // Pings stop with the last answered round (at 900 + 80 ms) and resume at 1300.
        assert_eq!(report.longest_outage, Duration::from_millis(320));
        assert_eq!(report.settle.alone_after, Some(Duration::from_millis(300)));
        assert_eq!(report.settle.status_after, Some(Duration::from_millis(450)));
        assert_eq!(
            report.settle.neighbour_after,
            Some(Duration::from_millis(350))
        );
        let expect = Expectation::after_any_fault()
            .moves(1)
            .outage(Duration::from_secs(1));
        assert!(expect.violations(&report, &names()).is_empty());
        let strict = expect.outage(Duration::from_millis(100)).moves(0);
        assert_eq!(strict.violations(&report, &names()).len(), 2);
    }

    #[test]
    fn two_macs_at_the_end_is_a_violation() {
        let rounds: Vec<&[&str]> = vec![&[A, B]; 40];
        let rec = recording(&rounds, |_| Some(A), |_| Some(A));
        let report = rec.report(vip(), window(1000, 1000, 4000));
        assert_eq!(report.owners, vec![A]);
        assert_eq!(report.moves, 0);
        assert_eq!(report.overlap, Duration::from_millis(3000));
        let violations = Expectation::after_any_fault()
            .overlap(Duration::ZERO)
            .violations(&report, &names());
        assert_eq!(violations.len(), 2, "{violations:#?}");
        assert!(violations[1].contains("node1 and node2 answer ARP"));
    }

    #[test]
    fn nothing_answering_at_the_end_is_a_violation() {
        let mut rounds: Vec<&[&str]> = vec![&[A]; 10];
        rounds.extend(vec![&[][..]; 30]);
        let rec = recording(&rounds, |_| Some(A), |_| None);
        let report = rec.report(vip(), window(1000, 1000, 4000));
        assert!(report.settle.last_answers.is_empty());
        assert_eq!(report.longest_outage, Duration::from_millis(3020));
        let violations = Expectation::after_any_fault().violations(&report, &names());
        assert_eq!(
            violations,
            vec!["198.18.0.160: at the end no MACs answer ARP, not exactly one MAC"]
        );
    }

    #[test]
    fn a_short_observation_is_a_violation() {
        let rounds: Vec<&[&str]> = vec![&[A]; 20];
        let rec = recording(&rounds, |_| Some(A), |_| Some(A));
        let report = rec.report(vip(), window(1000, 1500, 2000));
        let violations = Expectation::after_any_fault().violations(&report, &names());
        assert_eq!(violations.len(), 1);
        assert!(violations[0].contains("observed only 500ms"));
    }

    #[test]
    fn a_move_to_a_third_node_is_not_ping_pong() {
        let mut rounds: Vec<&[&str]> = vec![&[A]; 5];
        rounds.extend(vec![&[B][..]; 5]);
        rounds.extend(vec![&[B, C][..]; 2]);
        rounds.extend(vec![&[C][..]; 30]);
        let rec = recording(&rounds, |_| Some(C), |_| Some(C));
        let report = rec.report(vip(), window(0, 1200, 4000));
        assert_eq!(report.owners, vec![A, B, C]);
        assert_eq!(report.moves, 2);
        assert!(!report.ping_pong);
        // Moves before the window do not count; the owner at its start does.
        let later = rec.report(vip(), window(700, 1200, 4000));
        assert_eq!(later.owners, vec![B, C]);
        assert_eq!(later.moves, 1);
    }

    #[test]
    fn a_flood_of_requests_from_another_sender_opens_no_rounds() {
        let rounds: Vec<&[&str]> = vec![&[A]; 20];
        let mut rec = recording(&rounds, |_| Some(A), |_| Some(A));
        let before = rec.rounds(vip(), ms(2000)).len();
        for k in 0..500 {
            rec.frames.push(Frame {
                at: ms(500) + Duration::from_micros(100 * k),
                ip: vip(),
                mac: "02:00:c6:12:00:b3".to_owned(),
                kind: FrameKind::Request {
                    sender: "198.18.0.179".parse().unwrap(),
                    broadcast: true,
                },
            });
        }
        rec.frames.sort_by_key(|f| f.at);
        assert_eq!(rec.rounds(vip(), ms(2000)).len(), before);
    }
}

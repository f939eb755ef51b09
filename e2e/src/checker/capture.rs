//! Parsers for what the client's tools print: `tcpdump -n -e -tt` lines of
//! ARP and neighbor advertisement frames, `ping -D` replies, and `ip -j neigh`
//! entries. Pure functions over text, so they are tested with canned output.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

/// A point in time as the client's tools print it: since the Unix epoch.
pub type Stamp = Duration;

/// What a captured frame says about an IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// An ARP request asking who has the IP, from `sender` (its sender IP);
    /// `broadcast` when sent to ff:ff:ff:ff:ff:ff, so every claimant hears it.
    Request {
        /// The sender IP of the request.
        sender: IpAddr,
        /// Whether it was broadcast (not a unicast reachability probe).
        broadcast: bool,
    },
    /// An ARP reply: the IP is at the frame's MAC.
    Reply,
    /// A gratuitous ARP (request or broadcast reply whose sender IP is the IP).
    Gratuitous,
    /// An IPv6 neighbor advertisement for the IP.
    Advertisement,
}

/// One ARP or neighbor advertisement frame seen on the client's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// When the client's interface saw it.
    pub at: Stamp,
    /// The IP it is about (target of a request, sender of a reply or an
    /// announcement, target of an advertisement).
    pub ip: IpAddr,
    /// For a request the asker's MAC; otherwise the MAC it says the IP is at
    /// (lowercase).
    pub mac: String,
    /// What kind of frame it is.
    pub kind: FrameKind,
}

impl Frame {
    /// Whether the frame claims the IP for its MAC: a reply, a gratuitous
    /// ARP or an advertisement.
    pub fn is_claim(&self) -> bool {
        !matches!(self.kind, FrameKind::Request { .. })
    }
}

const BROADCAST: &str = "ff:ff:ff:ff:ff:ff";

/// Parses `1700000000.123456` (seconds since the epoch, as `tcpdump -tt` and
/// `ping -D` print them).
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: u64 = secs.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos))
}

/// Parses one line of `tcpdump -n -e -tt` output into a frame, if it is an
/// ARP frame or a neighbor advertisement; anything else is `None`.
///
/// ```text
/// 1700000000.123456 0a:58:c6:12:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.160 tell 198.18.0.100, length 28
/// 1700000001.123456 0a:58:c6:12:00:0b > 0a:58:c6:12:00:64, ethertype ARP (0x0806), length 42: Reply 198.18.0.160 is-at 0a:58:c6:12:00:0b, length 28
/// 1700000007.123456 0a:58:c6:12:00:0b > 33:33:00:00:00:01, ethertype IPv6 (0x86dd), length 86: 2001:db8:18::13 > ff02::1: ICMP6, neighbor advertisement, tgt is 2001:db8:18::e0, length 32
/// ```
pub fn parse_tcpdump(line: &str) -> Option<Frame> {
    let mut words = line.split_whitespace();
    let at = parse_stamp(words.next()?)?;
    let src = words.next()?.to_lowercase();
    if words.next()? != ">" {
        return None;
    }
    let dst = words.next()?.trim_end_matches(',').to_lowercase();
    let (_, payload) = line.split_once("ethertype ")?.1.split_once(": ")?;
    if let Some(rest) = payload.strip_prefix("Request who-has ") {
        let mut words = rest.split_whitespace();
        let target: IpAddr = words.next()?.parse().ok()?;
        let sender: IpAddr = words
            .skip_while(|w| *w != "tell")
            .nth(1)?
            .trim_end_matches(',')
            .parse()
            .ok()?;
        let kind = if sender == target {
            FrameKind::Gratuitous
        } else {
            FrameKind::Request {
                sender,
                broadcast: dst == BROADCAST,
            }
        };
        return Some(Frame {
            at,
            ip: target,
            mac: src,
            kind,
        });
    }
    if let Some(rest) = payload.strip_prefix("Reply ") {
        let mut words = rest.split_whitespace();
        let ip: IpAddr = words.next()?.parse().ok()?;
        if words.next()? != "is-at" {
            return None;
        }
        let mac = words.next()?.trim_end_matches(',').to_lowercase();
        let kind = if dst == BROADCAST {
            FrameKind::Gratuitous
        } else {
            FrameKind::Reply
        };
        return Some(Frame { at, ip, mac, kind });
    }
    if payload.contains("neighbor advertisement") {
        let target = payload.split_once("tgt is ")?.1;
        let ip: IpAddr = target
            .split(|c: char| c == ',' || c.is_whitespace())
            .next()?
            .parse()
            .ok()?;
        return Some(Frame {
            at,
            ip,
            mac: src,
            kind: FrameKind::Advertisement,
        });
    }
    None
}

/// The time of one `ping -D` reply line (`[1700000000.123456] 64 bytes from
/// …: icmp_seq=1 …`); `None` for any other line, duplicates included.
pub fn parse_ping_reply(line: &str) -> Option<Stamp> {
    let rest = line.strip_prefix('[')?;
    let (stamp, rest) = rest.split_once(']')?;
    if !rest.contains("bytes from") || !rest.contains("icmp_seq=") || rest.contains("DUP!") {
        return None;
    }
    parse_stamp(stamp)
}

/// The entries of `ip -j neigh show` output: each address with its MAC
/// (lowercase), or `None` when the entry is not usable (INCOMPLETE, FAILED).
pub fn parse_neighbours(json: &str) -> Vec<(IpAddr, Option<String>)> {
    let entries: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    entries
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let ip: IpAddr = e["dst"].as_str()?.parse().ok()?;
            let failed = e["state"]
                .as_array()
                .is_some_and(|states| states.iter().any(|s| s == "FAILED" || s == "INCOMPLETE"));
            let mac = e["lladdr"]
                .as_str()
                .filter(|_| !failed)
                .map(str::to_lowercase);
            Some((ip, mac))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "0a:58:c6:12:00:64";
    const A: &str = "0a:58:c6:12:00:0b";
    const B: &str = "0a:58:c6:12:00:0c";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn at(secs: u64, micros: u32) -> Stamp {
        Duration::new(secs, micros * 1000)
    }

    /// Output of `tcpdump -n -e -tt` (4.99) reading frames of every kind the
    /// checker meets.
    const CAPTURE: &str = "\
1700000000.123456 0a:58:c6:12:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.160 tell 198.18.0.100, length 28
1700000001.123456 0a:58:c6:12:00:0b > 0a:58:c6:12:00:64, ethertype ARP (0x0806), length 42: Reply 198.18.0.160 is-at 0a:58:c6:12:00:0b, length 28
1700000002.123456 0a:58:c6:12:00:0b > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.160 tell 198.18.0.160, length 28
1700000003.123456 0a:58:c6:12:00:0b > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.160 (ff:ff:ff:ff:ff:ff) tell 198.18.0.160, length 28
1700000004.123456 0a:58:c6:12:00:0c > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Reply 198.18.0.160 is-at 0a:58:c6:12:00:0c, length 28
1700000005.123456 0a:58:c6:12:00:64 > 0a:58:c6:12:00:0b, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.160 (0a:58:c6:12:00:0b) tell 198.18.0.100, length 28
1700000007.123456 0a:58:c6:12:00:0b > 33:33:00:00:00:01, ethertype IPv6 (0x86dd), length 86: 2001:db8:18::13 > ff02::1: ICMP6, neighbor advertisement, tgt is 2001:db8:18::e0, length 32
1700000008.000001 0a:58:c6:12:00:0c > 0a:58:c6:12:00:64, ethertype IPv6 (0x86dd), length 86: 2001:db8:18::e0 > 2001:db8:18::100: ICMP6, neighbor advertisement, tgt is 2001:db8:18::e0, length 32
reading from file t.pcap, link-type EN10MB (Ethernet), snapshot length 65535
1700000009.000000 0a:58:c6:12:00:0b > 0a:58:c6:12:00:64, ethertype IPv4 (0x0800), length 98: 198.18.0.160 > 198.18.0.100: ICMP echo reply, id 1, seq 1, length 64
";

    #[test]
    fn reads_every_kind_of_frame() {
        let frames: Vec<Frame> = CAPTURE.lines().filter_map(parse_tcpdump).collect();
        let vip = ip("198.18.0.160");
        let v6 = ip("2001:db8:18::e0");
        let client = ip("198.18.0.100");
        let frame = |at, ip, mac: &str, kind| Frame {
            at,
            ip,
            mac: mac.to_owned(),
            kind,
        };
        assert_eq!(
            frames,
            vec![
                frame(
                    self::at(1_700_000_000, 123_456),
                    vip,
                    CLIENT,
                    FrameKind::Request {
                        sender: client,
                        broadcast: true
                    }
                ),
                frame(self::at(1_700_000_001, 123_456), vip, A, FrameKind::Reply),
                frame(
                    self::at(1_700_000_002, 123_456),
                    vip,
                    A,
                    FrameKind::Gratuitous
                ),
                frame(
                    self::at(1_700_000_003, 123_456),
                    vip,
                    A,
                    FrameKind::Gratuitous
                ),
                frame(
                    self::at(1_700_000_004, 123_456),
                    vip,
                    B,
                    FrameKind::Gratuitous
                ),
                frame(
                    self::at(1_700_000_005, 123_456),
                    vip,
                    CLIENT,
                    FrameKind::Request {
                        sender: client,
                        broadcast: false
                    }
                ),
                frame(
                    self::at(1_700_000_007, 123_456),
                    v6,
                    A,
                    FrameKind::Advertisement
                ),
                frame(self::at(1_700_000_008, 1), v6, B, FrameKind::Advertisement),
            ]
        );
        assert!(!frames[0].is_claim() && frames[1].is_claim() && frames[6].is_claim());
    }

    #[test]
    fn stamps_keep_their_precision() {
        assert_eq!(
            parse_stamp("1700000000.5"),
            Some(at(1_700_000_000, 500_000))
        );
        assert_eq!(
            parse_stamp("1700000000.000017"),
            Some(at(1_700_000_000, 17))
        );
        assert_eq!(parse_stamp("1700000000"), Some(at(1_700_000_000, 0)));
        assert_eq!(parse_stamp("17x0.1"), None);
        assert_eq!(parse_stamp("1.-5"), None);
    }

    #[test]
    fn reads_ping_replies_with_their_time() {
        let out = "\
PING 198.18.0.160 (198.18.0.160) 56(84) bytes of data.
[1700000000.100000] 64 bytes from 198.18.0.160: icmp_seq=1 ttl=64 time=0.071 ms
[1700000000.116500] 64 bytes from 198.18.0.160: icmp_seq=2 ttl=64 time=0.065 ms
[1700000000.116900] 64 bytes from 198.18.0.160: icmp_seq=2 ttl=64 time=0.4 ms (DUP!)
[1700000000.500000] From 198.18.0.100 icmp_seq=9 Destination Host Unreachable
[1700000001.000000] 64 bytes from 2001:db8:18::e0: icmp_seq=3 ttl=64 time=0.06 ms
";
        let replies: Vec<Stamp> = out.lines().filter_map(parse_ping_reply).collect();
        assert_eq!(
            replies,
            vec![
                at(1_700_000_000, 100_000),
                at(1_700_000_000, 116_500),
                at(1_700_000_001, 0)
            ]
        );
    }

    #[test]
    fn reads_usable_neighbour_entries() {
        let json = r#"[
            {"dst":"198.18.0.160","lladdr":"0A:58:C6:12:00:0B","state":["REACHABLE"]},
            {"dst":"198.18.0.161","state":["INCOMPLETE"]},
            {"dst":"198.18.0.162","lladdr":"0a:58:c6:12:00:0c","state":["FAILED"]},
            {"dst":"2001:db8:18::e0","lladdr":"0a:58:c6:12:00:0c","state":["STALE"]}
        ]"#;
        assert_eq!(
            parse_neighbours(json),
            vec![
                (ip("198.18.0.160"), Some(A.to_owned())),
                (ip("198.18.0.161"), None),
                (ip("198.18.0.162"), None),
                (ip("2001:db8:18::e0"), Some(B.to_owned())),
            ]
        );
        assert!(parse_neighbours("not json").is_empty());
    }
}

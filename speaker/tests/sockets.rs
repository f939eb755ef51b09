//! The data plane through real sockets, between two network namespaces
//! joined by a veth pair: the announcer runs in one ("speaker"), a client
//! in the other asks with `arping` and `ping -6` and listens with `tcpdump`.
//!
//! Needs root (namespaces, raw sockets); skips with a message otherwise.
//! Addresses are only from 198.18.0.0/15 and 2001:db8::/32, names are
//! unique per run, and everything is deleted even when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrolb_speaker::metrics::{AddressFamily, AnnouncerMetrics, Suppression};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::packet::arp::ArpRequest;
use ferrolb_speaker::socket::{FrameIo, PacketSocket};
use ferrolb_speaker::{Announcer, AnnouncerConfig, InterfaceSelection};

const SPEAKER_IP: &str = "198.18.0.2";
const CLIENT_IP: &str = "198.18.0.1";
const VIP4: &str = "198.18.0.200";
const NOT_OURS: &str = "198.18.0.201";
const VIP6: &str = "2001:db8::c8";

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|error| panic!("{args:?}: {error}"))
}

fn must(args: &[&str]) {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Two namespaces and a veth between them; deleted on drop.
struct Lab {
    speaker_ns: String,
    client_ns: String,
    speaker_if: String,
    client_if: String,
}

impl Lab {
    /// Builds the lab; `None` when this environment cannot create network
    /// namespaces at all (a container without the privilege).
    fn new() -> Option<Self> {
        let id = std::process::id();
        let lab = Self {
            speaker_ns: format!("flbdp-s-{id}"),
            client_ns: format!("flbdp-c-{id}"),
            speaker_if: format!("fdps{}", id % 100_000),
            client_if: format!("fdpc{}", id % 100_000),
        };
        let probe = run(&["ip", "netns", "add", &lab.speaker_ns]);
        if !probe.status.success() {
            eprintln!(
                "skipped: cannot create a network namespace: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return None;
        }
        must(&["ip", "netns", "add", &lab.client_ns]);
        for ns in [&lab.speaker_ns, &lab.client_ns] {
            // No duplicate address detection: addresses usable at once.
            for key in ["default", "all"] {
                must(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.accept_dad=0"),
                ]);
            }
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        must(&[
            "ip",
            "link",
            "add",
            &lab.speaker_if,
            "netns",
            &lab.speaker_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ]);
        for (ns, dev, v4, v6) in [
            (&lab.speaker_ns, &lab.speaker_if, SPEAKER_IP, "2001:db8::2"),
            (&lab.client_ns, &lab.client_if, CLIENT_IP, "2001:db8::1"),
        ] {
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            must(&[
                "ip",
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        Some(lab)
    }

    fn in_client(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.client_ns];
        full.extend_from_slice(args);
        run(&full)
    }

    fn speaker_mac(&self) -> String {
        let output = run(&[
            "ip",
            "-n",
            &self.speaker_ns,
            "-o",
            "link",
            "show",
            &self.speaker_if,
        ]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.find(|word| *word == "link/ether");
        words
            .next()
            .expect("the veth has an Ethernet address")
            .to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and its peer.
        for ns in [&self.speaker_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Every MAC address (six colon-separated hex bytes) in `text`, lowercase.
fn macs(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
        .filter(|word| {
            let parts: Vec<&str> = word.split(':').collect();
            parts.len() == 6 && parts.iter().all(|p| p.len() == 2)
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Reply round trips in microseconds from arping's output (both the
/// Debian `time=… usec|msec` and the iputils `…ms` forms).
fn round_trips_us(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if let Some(value) = word.strip_prefix("time=") {
                let Ok(value) = value.parse::<f64>() else {
                    continue;
                };
                match words.get(i + 1) {
                    Some(&"usec") => out.push(value),
                    Some(&"msec") => out.push(value * 1000.0),
                    _ => {}
                }
            } else if let Some(value) = word.strip_suffix("ms")
                && line.contains("reply from")
                && let Ok(value) = value.parse::<f64>()
            {
                out.push(value * 1000.0);
            }
        }
    }
    out
}

/// Runs arping from the client: `count` requests for `ip`.
fn arping(lab: &Lab, ip: &str, count: u32, interval: &str) -> String {
    let help = run(&["arping", "--help"]);
    let debian = String::from_utf8_lossy(&help.stdout).contains("Habets")
        || String::from_utf8_lossy(&help.stderr).contains("Habets");
    let count = count.to_string();
    let output = if debian {
        lab.in_client(&[
            "arping",
            "-c",
            &count,
            "-W",
            interval,
            "-w",
            "20",
            "-i",
            &lab.client_if,
            ip,
        ])
    } else {
        lab.in_client(&[
            "arping",
            "-c",
            &count,
            "-i",
            interval,
            "-w",
            "20",
            "-I",
            &lab.client_if,
            ip,
        ])
    };
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts tcpdump in the client namespace and waits until it listens.
fn tcpdump(lab: &Lab, filter: &str, count: u32) -> Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "tcpdump",
            "-i",
            &lab.client_if,
        ])
        .args(["-n", "-e", "-l", "-tt", "-c", &count.to_string(), filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.is_ok_and(|line| line.contains("listening on")) {
            break;
        }
    }
    // Keep draining stderr so tcpdump never blocks on it.
    thread::spawn(move || lines.for_each(drop));
    child
}

/// Waits for `child` to exit, at most `timeout`; kills it after that.
fn wait_output(mut child: Child, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("child output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the test asks of the announcer thread in the speaker namespace.
enum Request {
    SetOwned(
        BTreeMap<IpAddr, InterfaceSelection>,
        mpsc::Sender<SystemTime>,
    ),
    Interfaces(mpsc::Sender<Vec<String>>),
    SetNamed(BTreeSet<String>),
    Stop,
}

/// Runs an announcer in `ns` on its own thread and runtime: a thread that
/// entered a namespace keeps it, and so do the threads it starts.
///
/// Also returns the `/proc` directories of every thread the announcer runs
/// on, to measure its CPU time.
fn spawn_announcer(ns: String, metrics: AnnouncerMetrics) -> (mpsc::Sender<Request>, Threads) {
    let (requests, receiver) = mpsc::channel::<Request>();
    let (started, started_rx) = mpsc::channel();
    let threads = Threads::default();
    let recorder = threads.clone();
    thread::spawn(move || {
        let file = File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        recorder.record();
        let on_start = recorder.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_start(move || on_start.record())
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let announcer = Announcer::start(AnnouncerConfig::default(), metrics)
                .await
                .expect("the announcer starts");
            started.send(()).expect("test waits");
            loop {
                let request = tokio::task::block_in_place(|| receiver.recv());
                match request {
                    Ok(Request::SetOwned(owned, done)) => {
                        let at = SystemTime::now();
                        announcer.set_owned(owned);
                        let _ = done.send(at);
                    }
                    Ok(Request::Interfaces(reply)) => {
                        let _ = reply.send(announcer.interfaces());
                    }
                    Ok(Request::SetNamed(names)) => announcer.set_named_interfaces(names),
                    Ok(Request::Stop) | Err(_) => break,
                }
            }
            announcer.shutdown().await;
        });
    });
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the announcer started in the namespace");
    (requests, threads)
}

/// Threads whose CPU time is counted, as `/proc/<pid>/task/<tid>` paths.
#[derive(Clone, Default)]
struct Threads(std::sync::Arc<std::sync::Mutex<Vec<std::path::PathBuf>>>);

impl Threads {
    /// Adds the calling thread.
    fn record(&self) {
        if let Ok(path) = std::fs::read_link("/proc/thread-self") {
            self.0
                .lock()
                .unwrap()
                .push(std::path::Path::new("/proc").join(path));
        }
    }

    /// User plus system CPU time of the threads so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|path| std::fs::read_to_string(path.join("stat")).ok())
            .map(|stat| {
                // Fields after the command name (which may hold spaces):
                // utime and stime are the 12th and 13th.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                let fields: Vec<u64> = rest
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .map(|f| f.parse().unwrap())
                    .collect();
                fields.iter().sum::<u64>()
            })
            .sum()
    }
}

/// Sends UDP datagrams from `ns` to `target` at about `rate` per second for
/// `duration`; returns how many were sent.
fn blast_udp(ns: &str, target: &str, rate: u32, duration: Duration) -> u64 {
    let path = format!("/var/run/netns/{ns}");
    let target: std::net::SocketAddr = format!("{target}:9").parse().unwrap();
    thread::spawn(move || {
        let file = File::open(path).expect("namespace file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let per_ms = u64::from(rate / 1000);
        let start = Instant::now();
        let mut sent = 0_u64;
        let mut slot = 0_u64;
        while start.elapsed() < duration {
            slot += 1;
            for _ in 0..per_ms {
                if socket.send_to(b"unrelated traffic", target).is_ok() {
                    sent += 1;
                }
            }
            let next = start + Duration::from_millis(slot);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        sent
    })
    .join()
    .unwrap()
}

/// The index of `interface` in namespace `ns`.
fn ifindex(ns: &str, interface: &str) -> u32 {
    let output = run(&["ip", "-n", ns, "-o", "link", "show", "dev", interface]);
    let text = String::from_utf8_lossy(&output.stdout);
    text.split(':').next().unwrap().trim().parse().unwrap()
}

/// Sends `frames` out of `interface` in namespace `ns` through a packet
/// socket, 50 a millisecond; returns how many the kernel took.
fn send_frames(ns: &str, interface: &str, frames: Vec<Vec<u8>>) -> usize {
    let path = format!("/var/run/netns/{ns}");
    let index = ifindex(ns, interface);
    thread::spawn(move || {
        let file = File::open(path).expect("namespace file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let socket = PacketSocket::arp_requests(index).expect("a packet socket");
        let mut sent = 0;
        for chunk in frames.chunks(50) {
            sent += chunk
                .iter()
                .filter(|frame| socket.send(frame).is_ok())
                .count();
            thread::sleep(Duration::from_millis(1));
        }
        sent
    })
    .join()
    .unwrap()
}

fn interfaces(requests: &mpsc::Sender<Request>) -> Vec<String> {
    let (reply, rx) = mpsc::channel();
    requests.send(Request::Interfaces(reply)).unwrap();
    rx.recv().unwrap()
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn announces_and_answers_through_real_sockets() {
    let uid = run(&["id", "-u"]);
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: needs root to create network namespaces and raw sockets");
        return;
    }
    for tool in ["ip", "arping"] {
        if !have(tool) {
            eprintln!("skipped: `{tool}` is not installed");
            return;
        }
    }
    let Some(lab) = Lab::new() else {
        return;
    };
    let mac = lab.speaker_mac();
    let metrics = AnnouncerMetrics::default();
    let (requests, threads) = spawn_announcer(lab.speaker_ns.clone(), metrics.clone());
    assert_eq!(interfaces(&requests), vec![lab.speaker_if.clone()]);
    let received = || {
        AnnouncerMetrics::get(
            &metrics.frames_received,
            AddressFamily::Ipv4,
            &lab.speaker_if,
        )
    };

    // 1. The receive path sees only ARP requests: 10,000 UDP datagrams to the
    //    speaker's own address do not reach the socket. Neighbours are
    //    resolved first so the burst itself causes no ARP.
    assert!(
        lab.in_client(&["ping", "-c", "1", "-W", "2", SPEAKER_IP])
            .status
            .success()
    );
    let before = received();
    let burst = lab.in_client(&[
        "bash",
        "-c",
        &format!("for i in $(seq 10000); do echo unrelated > /dev/udp/{SPEAKER_IP}/9; done"),
    ]);
    assert!(
        burst.status.success(),
        "{}",
        String::from_utf8_lossy(&burst.stderr)
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        received(),
        before,
        "unrelated frames reached the ARP socket"
    );
    eprintln!(
        "10,000 UDP datagrams: ARP socket frames received {before} -> {}",
        received()
    );

    // 1b. The same at 100,000 datagrams per second for 3 s, with the
    //     announcer's CPU time over that window.
    let ticks_per_second: f64 = String::from_utf8_lossy(&run(&["getconf", "CLK_TCK"]).stdout)
        .trim()
        .parse()
        .unwrap_or(100.0);
    let (cpu_before, frames_before) = (threads.cpu_ticks(), received());
    let window = Instant::now();
    let sent = blast_udp(&lab.client_ns, SPEAKER_IP, 100_000, Duration::from_secs(3));
    let seconds = window.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(100));
    let cpu = (threads.cpu_ticks() - cpu_before) as f64 / ticks_per_second;
    eprintln!(
        "{sent} unrelated datagrams in {seconds:.2} s ({:.0}/s): announcer CPU {:.2} % of a core ({} threads, {ticks_per_second} ticks/s), ARP socket frames {frames_before} -> {}",
        sent as f64 / seconds,
        100.0 * cpu / seconds,
        threads.0.lock().unwrap().len(),
        received(),
    );
    assert_eq!(
        received(),
        frames_before,
        "unrelated frames reached the ARP socket"
    );

    // 2. Owning a VIP sends gratuitous ARP at once, both forms, from our MAC.
    let capture = have("tcpdump").then(|| tcpdump(&lab, &format!("arp and host {VIP4}"), 2));
    let (done, done_rx) = mpsc::channel();
    let owned = BTreeMap::from([
        (VIP4.parse().unwrap(), InterfaceSelection::All),
        (
            VIP6.parse().unwrap(),
            InterfaceSelection::Only(BTreeSet::from([lab.speaker_if.clone()])),
        ),
    ]);
    requests.send(Request::SetOwned(owned, done)).unwrap();
    let owned_at = done_rx.recv().unwrap();
    if let Some(capture) = capture {
        let text = wait_output(capture, Duration::from_secs(5));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "two gratuitous ARPs: {text}");
        assert!(lines.iter().all(|line| line.contains(&mac)), "{text}");
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&format!("Request who-has {VIP4} tell {VIP4}"))),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&format!("Reply {VIP4} is-at {mac}"))),
            "{text}"
        );
        let first: f64 = lines[0].split_whitespace().next().unwrap().parse().unwrap();
        let owned_at = owned_at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let delay_ms = (first - owned_at) * 1000.0;
        eprintln!("first gratuitous ARP on the wire {delay_ms:.3} ms after set_owned");
        assert!(delay_ms < 10.0, "first GARP after {delay_ms} ms");
    } else {
        eprintln!("tcpdump not installed: gratuitous ARP capture not checked");
    }

    // 3. arping: exactly our MAC answers for the VIP, three times.
    let text = arping(&lab, VIP4, 3, "0.2");
    let answers = macs(&text);
    let replies: Vec<&String> = answers
        .iter()
        .filter(|m| **m != "ff:ff:ff:ff:ff:ff")
        .collect();
    assert_eq!(replies.len(), 3, "three replies: {text}");
    assert!(
        replies.iter().all(|m| **m == mac),
        "only {mac} answers: {text}"
    );
    // Nobody answers for an IP we do not own.
    let text = arping(&lab, NOT_OURS, 2, "0.2");
    assert!(
        round_trips_us(&text).is_empty() && !text.contains(&mac),
        "{text}"
    );

    // 4. IPv6: the client resolves the VIP to our MAC through a neighbor
    //    solicitation to its solicited-node group.
    if have("ping") {
        let _ = lab.in_client(&["ping", "-6", "-c", "1", "-W", "1", VIP6]);
        let neigh = lab.in_client(&["ip", "-6", "neigh", "show", VIP6, "dev", &lab.client_if]);
        let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
        assert_eq!(macs(&neigh), vec![mac.clone()], "neighbour entry: {neigh}");
        let replies =
            || AnnouncerMetrics::get(&metrics.replies_sent, AddressFamily::Ipv6, &lab.speaker_if);
        assert!(replies() >= 1);

        // 4b. Reachability check (NUD): the stale entry is probed with a
        //     unicast solicitation to the VIP at our MAC (after
        //     delay_first_probe_time, 5 s by default), which the kernel would
        //     not deliver to the ICMPv6 socket; it is answered.
        must(&[
            "ip",
            "-n",
            &lab.client_ns,
            "-6",
            "neigh",
            "change",
            VIP6,
            "lladdr",
            &mac,
            "dev",
            &lab.client_if,
            "nud",
            "stale",
        ]);
        let capture = have("tcpdump").then(|| {
            tcpdump(
                &lab,
                &format!("icmp6 and ether dst {mac} and ip6[40] == 135 and ip6 dst {VIP6}"),
                1,
            )
        });
        let before = replies();
        let state = lab.in_client(&["ip", "-6", "neigh", "show", VIP6, "dev", &lab.client_if]);
        eprintln!(
            "before the check: {}",
            String::from_utf8_lossy(&state.stdout).trim()
        );
        let _ = lab.in_client(&["ping", "-6", "-c", "1", "-W", "1", VIP6]);
        wait_for("the reachability check to be answered", || {
            replies() > before
        });
        if let Some(capture) = capture {
            let text = wait_output(capture, Duration::from_secs(8));
            assert!(
                text.contains(&format!("> {VIP6}: ICMP6, neighbor solicitation")),
                "{text}"
            );
        }
        wait_for("the reachability check to be answered", || {
            replies() > before
        });
        let v6 = |counter| AnnouncerMetrics::get(counter, AddressFamily::Ipv6, &lab.speaker_if);
        assert!(
            replies() > before,
            "the reachability check was not answered: frames {}, solicitations {}, malformed {}, send errors {}",
            v6(&metrics.frames_received),
            v6(&metrics.ndp_solicitations_received),
            v6(&metrics.malformed_received),
            v6(&metrics.send_errors),
        );
        let neigh = lab.in_client(&["ip", "-6", "neigh", "show", VIP6, "dev", &lab.client_if]);
        let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
        assert_eq!(macs(&neigh), vec![mac.clone()], "neighbour entry: {neigh}");
        assert!(!neigh.contains("FAILED"), "{neigh}");
        eprintln!("after a unicast reachability check: {}", neigh.trim());
    }

    // 5. Reply latency through the real socket path, as arping sees it.
    // FERROLB_ARP_SAMPLES asks for a longer run when publishing figures.
    let samples = std::env::var("FERROLB_ARP_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let text = arping(&lab, VIP4, samples, "0.005");
    let mut times = round_trips_us(&text);
    times.sort_by(f64::total_cmp);
    if times.len() >= 100 {
        eprintln!(
            "ARP reply round trip over veth ({} replies): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            times.len(),
            percentile(&times, 50.0),
            percentile(&times, 99.0),
            times[times.len() - 1],
        );
    }

    // 6. The interface going down closes its socket; coming back up opens
    //    it again and re-announces.
    must(&[
        "ip",
        "-n",
        &lab.speaker_ns,
        "link",
        "set",
        &lab.speaker_if,
        "down",
    ]);
    wait_for("the interface to be dropped", || {
        interfaces(&requests).is_empty()
    });
    let gratuitous = || {
        AnnouncerMetrics::get(
            &metrics.gratuitous_sent,
            AddressFamily::Ipv4,
            &lab.speaker_if,
        )
    };
    let sent_before = gratuitous();
    must(&[
        "ip",
        "-n",
        &lab.speaker_ns,
        "link",
        "set",
        &lab.speaker_if,
        "up",
    ]);
    wait_for("the interface to return", || {
        interfaces(&requests) == vec![lab.speaker_if.clone()]
    });
    wait_for("re-announcement", || gratuitous() >= sent_before + 2);

    // 7. Released IPs are not answered.
    let (done, done_rx) = mpsc::channel();
    requests
        .send(Request::SetOwned(BTreeMap::new(), done))
        .unwrap();
    done_rx.recv().unwrap();
    let text = arping(&lab, VIP4, 2, "0.2");
    assert!(!text.contains(&mac), "released VIP still answered: {text}");

    // 8. Taking over 1,000 IPs at once: every first announcement (two
    //    gratuitous ARPs each) leaves within 50 ms under the default cap.
    let gratuitous_before = gratuitous();
    let many: BTreeMap<IpAddr, InterfaceSelection> = (0..1000_u32)
        .map(|n| {
            let ip =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 19, 0, 0)) + n);
            (IpAddr::V4(ip), InterfaceSelection::All)
        })
        .collect();
    let (done, done_rx) = mpsc::channel();
    let start = Instant::now();
    requests.send(Request::SetOwned(many, done)).unwrap();
    done_rx.recv().unwrap();
    // Polled every millisecond: the figure is accurate to about that.
    while gratuitous() < gratuitous_before + 2000 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "first announcements missing"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    eprintln!("1,000 IPs taken over: 2,000 gratuitous ARPs sent in {elapsed:?}");
    assert!(elapsed < Duration::from_millis(50), "took {elapsed:?}");

    // 9. A veth, excluded by default by its name, is used once named, for
    //    the IPs whose selection names it only; when it flaps, it alone gets
    //    the first announcement and the repeats again.
    let (done, done_rx) = mpsc::channel();
    requests
        .send(Request::SetOwned(BTreeMap::new(), done))
        .unwrap();
    done_rx.recv().unwrap();
    let id = std::process::id() % 100_000;
    let named = format!("vethfd{id}");
    let peer = format!("fdpn{id}");
    must(&[
        "ip",
        "link",
        "add",
        &named,
        "netns",
        &lab.speaker_ns,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        &lab.client_ns,
    ]);
    must(&["ip", "-n", &lab.client_ns, "link", "set", &peer, "up"]);
    must(&["ip", "-n", &lab.speaker_ns, "link", "set", &named, "up"]);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        interfaces(&requests),
        vec![lab.speaker_if.clone()],
        "a veth is not announced on by default"
    );
    requests
        .send(Request::SetNamed(BTreeSet::from([named.clone()])))
        .unwrap();
    wait_for("the named veth to be announced on", || {
        interfaces(&requests).contains(&named)
    });
    let sent_on = |interface: &str| {
        AnnouncerMetrics::get(&metrics.gratuitous_sent, AddressFamily::Ipv4, interface)
    };
    let (lan_before, named_before) = (sent_on(&lab.speaker_if), sent_on(&named));
    let default_only: IpAddr = "198.18.0.202".parse().unwrap();
    let owned = BTreeMap::from([
        (
            VIP4.parse().unwrap(),
            InterfaceSelection::AllAnd(BTreeSet::from([named.clone()])),
        ),
        (default_only, InterfaceSelection::All),
    ]);
    let (done, done_rx) = mpsc::channel();
    requests.send(Request::SetOwned(owned, done)).unwrap();
    done_rx.recv().unwrap();
    // The first announcement and five repeats, two packets each: both IPs
    // on the LAN interface, only the one that names it on the veth.
    wait_for("the announcements and repeats", || {
        sent_on(&lab.speaker_if) >= lan_before + 2 * 2 * 6
            && sent_on(&named) >= named_before + 2 * 6
    });
    thread::sleep(Duration::from_millis(100));
    assert_eq!(sent_on(&lab.speaker_if), lan_before + 2 * 2 * 6);
    assert_eq!(sent_on(&named), named_before + 2 * 6);

    let (lan_before, named_before) = (sent_on(&lab.speaker_if), sent_on(&named));
    must(&["ip", "-n", &lab.speaker_ns, "link", "set", &named, "down"]);
    wait_for("the named veth to be dropped", || {
        !interfaces(&requests).contains(&named)
    });
    must(&["ip", "-n", &lab.speaker_ns, "link", "set", &named, "up"]);
    wait_for("the named veth to return", || {
        interfaces(&requests).contains(&named)
    });
    // First announcement and the repeats at 250 ms, 500 ms and 1 s.
    wait_for("the veth's re-announcement", || {
        sent_on(&named) >= named_before + 2 * 4
    });
    assert_eq!(
        sent_on(&lab.speaker_if),
        lan_before,
        "the interface that did not flap is not re-announced on"
    );

    // 10. Replies are limited: a host flooding requests for an owned IP
    //     gets its burst and then about its rate (defaults: 1,000, then
    //     200/s); requests from a group address get no reply at all.
    let v4 = |counter| AnnouncerMetrics::get(counter, AddressFamily::Ipv4, &lab.speaker_if);
    let suppressed =
        |reason| metrics.suppressed_count(AddressFamily::Ipv4, &lab.speaker_if, reason);
    let reasons = [
        Suppression::BadSender,
        Suppression::RateSender,
        Suppression::RateInterface,
    ];
    let counts = || {
        (
            v4(&metrics.arp_requests_received),
            v4(&metrics.replies_sent),
            reasons.map(suppressed),
        )
    };
    let (requests_before, replies_before, suppressed_before) = counts();
    let request = |mac: MacAddr, ip: [u8; 4]| {
        ArpRequest {
            eth_destination: MacAddr::broadcast(),
            eth_source: MacAddr::new(0x02, 0, 0, 0, 0, 0x77),
            sender_mac: mac,
            sender_ip: ip.into(),
            target_mac: MacAddr::zero(),
            target_ip: VIP4.parse().unwrap(),
        }
        .encode()
    };
    let multicast = MacAddr::new(0x01, 0x00, 0x5e, 0, 0, 1);
    let mut frames = vec![request(multicast, [198, 18, 0, 77]); 5];
    frames.extend(vec![
        request(
            MacAddr::new(0x02, 0, 0, 0, 0, 0x77),
            [198, 18, 0, 77]
        );
        3000
    ]);
    let flood = Instant::now();
    let sent = send_frames(&lab.client_ns, &lab.client_if, frames);
    let seconds = flood.elapsed().as_secs_f64();
    // Frames the receive queue dropped never arrive; wait for the rest.
    let mut last = (0, Instant::now());
    wait_for("the flood to be processed", || {
        let received = v4(&metrics.arp_requests_received);
        if received != last.0 {
            last = (received, Instant::now());
        }
        received - requests_before == sent as u64 || last.1.elapsed() > Duration::from_millis(300)
    });
    let (requests_after, replies_after, suppressed_after) = counts();
    let received = requests_after - requests_before;
    let replies = replies_after - replies_before;
    let [bad, rate_sender, rate_interface] =
        [0, 1, 2].map(|i| suppressed_after[i] - suppressed_before[i]);
    eprintln!(
        "flood of {sent} requests in {seconds:.3} s: {received} received, {replies} answered, suppressed: {bad} bad sender, {rate_sender} over the sender's rate, {rate_interface} over the interface's"
    );
    assert_eq!(bad, 5, "requests from a multicast MAC are not answered");
    assert_eq!(
        received,
        replies + bad + rate_sender + rate_interface,
        "every request for an owned IP is answered or counted as suppressed"
    );
    let allowed = 1000 + (200.0 * (seconds + 0.5)).ceil() as u64;
    assert!(replies <= allowed, "{replies} replies, at most {allowed}");
    if received > allowed + 5 {
        assert!(rate_sender > 0);
    }

    requests.send(Request::Stop).unwrap();
}

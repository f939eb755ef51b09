//! The checker's eyes in the client namespace: `tcpdump` capturing every ARP
//! frame and neighbor advertisement with its time, one `ping -D -i 0.01` per
//! VIP, one `arping` per IPv4 VIP asking who has it every probe period (so who
//! answers is seen even while the client's neighbour entry is fresh), and the
//! client's neighbour entries read every 100 ms. Their output lands in a
//! shared [`Recording`]; the processes end when the observer is dropped.
//!
//! The probes ask as another host ([`PROBER_IP`], [`PROBER_MAC`]): answers to
//! the client's own address would refresh its neighbour entry to whichever
//! node answers, and hide a client left pointing at the wrong node. Answers
//! to the prober's MAC reach the client's port (the bridge learnt that MAC
//! there), where the capture sees them and the client's kernel ignores them.

use std::io::{BufRead as _, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::capture::{self, Stamp};
use super::timeline::{Recording, Report, Sample, Window};
use crate::lan::{self, Host};

/// What tcpdump keeps: ARP, and ICMPv6 neighbor advertisements (type 136).
const CAPTURE_FILTER: &str = "arp or (icmp6 and ip6[40] == 136)";
/// The sender IP of the checker's ARP requests: a lab address no host holds.
pub const PROBER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 178);
/// The sender MAC of the checker's ARP requests (locally administered).
pub const PROBER_MAC: &str = "02:00:c6:12:00:b2";
/// How often the client's neighbour entries are read.
const NEIGHBOUR_PERIOD: Duration = Duration::from_millis(100);

/// Now, as the client's tools stamp what they see.
pub fn now() -> Stamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The client-side recorders of a set of VIPs.
#[derive(Debug)]
pub struct Observer {
    client: Host,
    vips: Vec<IpAddr>,
    shared: Arc<Mutex<Recording>>,
    children: Vec<Child>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Observer {
    /// Starts recording `vips` from `client`, asking who has each IPv4 VIP
    /// every `probe_every`. Returns once the capture runs.
    pub fn start(client: &Host, vips: &[IpAddr], probe_every: Duration) -> Result<Self> {
        let mut observer = Self {
            client: client.clone(),
            vips: vips.to_vec(),
            shared: Arc::new(Mutex::new(Recording {
                prober: Some(IpAddr::V4(PROBER_IP)),
                ..Recording::default()
            })),
            children: Vec::new(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        observer.start_capture()?;
        for vip in vips {
            observer.start_ping(*vip)?;
        }
        for vip in vips.iter().filter(|v| v.is_ipv4()) {
            let child = observer.spawn(
                "arping",
                &[
                    "-q",
                    "-i",
                    lan::INNER_IFACE,
                    "-S",
                    &PROBER_IP.to_string(),
                    "-s",
                    PROBER_MAC,
                    "-W",
                    &format!("{:.3}", probe_every.as_secs_f64()),
                    &vip.to_string(),
                ],
                Stdio::null(),
                Stdio::null(),
            )?;
            observer.children.push(child);
        }
        observer.start_neighbour_sampler();
        Ok(observer)
    }

    /// The VIPs it records.
    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }

    /// Records that `vip`'s `ServiceL2Status` names the node with `mac` now.
    pub fn record_status(&self, vip: IpAddr, mac: Option<String>) {
        let sample = Sample { at: now(), mac };
        self.lock().statuses.entry(vip).or_default().push(sample);
    }

    /// A copy of everything recorded so far.
    pub fn recording(&self) -> Recording {
        self.lock().clone()
    }

    /// What the client saw of `vip` over `window`, so far.
    pub fn report(&self, vip: IpAddr, window: Window) -> Report {
        self.lock().report(vip, window)
    }

    /// The MACs answering `vip`'s probe rounds over the last `span`.
    pub fn recent_answers(&self, vip: IpAddr, span: Duration) -> Vec<Vec<String>> {
        let until = now();
        let since = until.saturating_sub(span);
        self.lock()
            .rounds(vip, until)
            .into_iter()
            .filter(|r| r.at >= since)
            .map(|r| r.answers)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, program: &str, args: &[&str], stdout: Stdio, stderr: Stdio) -> Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", &self.client.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {program} in {}", self.client.netns))
    }

    fn start_capture(&mut self) -> Result<()> {
        let mut child = self.spawn(
            "tcpdump",
            &[
                "-i",
                lan::INNER_IFACE,
                "-n",
                "-e",
                "-l",
                "-tt",
                "--immediate-mode",
                "-B",
                "8192",
                CAPTURE_FILTER,
            ],
            Stdio::piped(),
            Stdio::piped(),
        )?;
        let stdout = child.stdout.take().context("tcpdump has no stdout")?;
        let stderr = child.stderr.take().context("tcpdump has no stderr")?;
        self.children.push(child);
        let (ready, listening) = mpsc::channel();
        self.threads.push(std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = ready.send(());
                    break;
                }
            }
            // Keep draining, so tcpdump never blocks on a full pipe.
            for _ in lines {}
        }));
        let shared = Arc::clone(&self.shared);
        let vips = self.vips.clone();
        self.threads.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(frame) = capture::parse_tcpdump(&line)
                    && vips.contains(&frame.ip)
                {
                    shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .frames
                        .push(frame);
                }
            }
        }));
        if listening.recv_timeout(Duration::from_secs(10)).is_err() {
            bail!("tcpdump did not start capturing in {}", self.client.netns);
        }
        Ok(())
    }

    fn start_ping(&mut self, vip: IpAddr) -> Result<()> {
        // `stdbuf` makes ping flush every line into the pipe, so replies are
        // recorded as they come, not when a buffer fills.
        let mut child = self.spawn(
            "stdbuf",
            &["-oL", "ping", "-D", "-n", "-i", "0.01", &vip.to_string()],
            Stdio::piped(),
            Stdio::null(),
        )?;
        let stdout = child.stdout.take().context("ping has no stdout")?;
        self.children.push(child);
        let shared = Arc::clone(&self.shared);
        self.threads.push(std::thread::spawn(move || {
            read_lines(stdout, |line| {
                if let Some(at) = capture::parse_ping_reply(line) {
                    shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .replies
                        .entry(vip)
                        .or_default()
                        .push(at);
                }
            });
        }));
        Ok(())
    }

    fn start_neighbour_sampler(&mut self) {
        let shared = Arc::clone(&self.shared);
        let stop = Arc::clone(&self.stop);
        let netns = self.client.netns.clone();
        let vips = self.vips.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new("ip")
                    .args(["-n", &netns, "-j", "neigh", "show", "dev", lan::INNER_IFACE])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output();
                let at = now();
                if let Ok(out) = out {
                    let entries = capture::parse_neighbours(&String::from_utf8_lossy(&out.stdout));
                    let mut rec = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    for vip in &vips {
                        let mac = entries
                            .iter()
                            .find(|(ip, _)| ip == vip)
                            .and_then(|(_, mac)| mac.clone());
                        rec.neighbours
                            .entry(*vip)
                            .or_default()
                            .push(Sample { at, mac });
                    }
                }
                std::thread::sleep(NEIGHBOUR_PERIOD);
            }
        }));
    }
}

fn read_lines(from: impl Read, mut each: impl FnMut(&str)) {
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        each(&line);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

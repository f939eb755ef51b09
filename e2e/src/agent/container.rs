//! One container as the node agent runs it: a process in the pod's (or the
//! node's) network namespace, output appended to a log file, restarted with
//! exponential backoff as its restart policy says, readiness decided by its
//! HTTP probe (or a TCP check of the stand-in's first port).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::spec::{ContainerView, HttpProbe, restarts};

/// The first restart waits this long; each further one twice as long.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How to start a container's process.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: BTreeMap<String, String>,
    /// The network namespace it runs in.
    pub netns: String,
    /// A directory holding the ServiceAccount files, bound at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` in a private mount
    /// namespace (a tmpfs over `/var` holds the mount point).
    pub service_account: Option<PathBuf>,
    /// The log file (appended to across restarts).
    pub log: PathBuf,
    /// The pid file (rewritten at every start).
    pub pid_file: PathBuf,
}

/// How readiness is decided.
#[derive(Clone, Debug)]
pub enum Readiness {
    /// Ready while running.
    Running,
    /// Ready once a TCP connection to this port succeeds.
    Tcp(SocketAddr),
    /// An HTTP GET probe against this address.
    Http(IpAddr, HttpProbe),
}

/// The checks the agent runs against a container.
#[derive(Clone, Debug)]
pub struct Checks {
    /// What decides Ready.
    pub readiness: Readiness,
    /// An HTTP liveness probe: failing it `failure_threshold` times in a
    /// row gets the process stopped and restarted, as the kubelet does.
    pub liveness: Option<(IpAddr, HttpProbe)>,
}

/// A container being run; shares its state with the pod's status loop.
#[derive(Debug)]
pub struct Container {
    /// What the pod status shows.
    pub view: Arc<Mutex<ContainerView>>,
    /// Set to true to stop it for good.
    pub stop: watch::Sender<bool>,
    /// The supervising task.
    pub task: tokio::task::JoinHandle<()>,
}

impl Container {
    /// Starts supervising `launch`.
    pub fn start(
        view: ContainerView,
        launch: Launch,
        restart_policy: Option<String>,
        checks: Checks,
        grace: Duration,
    ) -> Self {
        let view = Arc::new(Mutex::new(view));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            view.clone(),
            launch,
            restart_policy,
            checks,
            grace,
            stop_rx,
        ));
        Self { view, stop, task }
    }

    /// Stops it (SIGTERM, SIGKILL after the grace period) and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn update(view: &Mutex<ContainerView>, f: impl FnOnce(&mut ContainerView)) {
    if let Ok(mut v) = view.lock() {
        f(&mut v);
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn supervise(
    view: Arc<Mutex<ContainerView>>,
    launch: Launch,
    restart_policy: Option<String>,
    checks: Checks,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let code = match run_once(&view, &launch, &checks, grace, &mut stop).await {
            Ok(Some(code)) => code,
            Ok(None) => return,
            Err(e) => {
                append_log(&launch, &format!("lab agent: {e:#}"));
                128
            }
        };
        let reason = if code == 0 { "Completed" } else { "Error" };
        let again = restarts(restart_policy.as_deref(), code);
        update(&view, |v| {
            v.running = false;
            v.ready = false;
            v.last_exit = Some((code, reason.to_owned(), now()));
            v.finished = !again;
        });
        if !again {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        update(&view, |v| v.restart_count += 1);
    }
}

fn append_log(launch: &Launch, line: &str) {
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Runs the process once. `Ok(None)`: stopped on request; `Ok(Some(code))`:
/// it exited by itself (a signal counts as 128 + its number).
async fn run_once(
    view: &Mutex<ContainerView>,
    launch: &Launch,
    checks: &Checks,
    grace: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<i32>> {
    let readiness = &checks.readiness;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("cannot open {}", launch.log.display()))?;
    let log_err = log.try_clone().context("cannot duplicate a log file")?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &launch.netns]);
    if let Some(sa) = &launch.service_account {
        // `ip netns exec` already gives the process its own mount namespace
        // (a slave of the host's): mounts made here stay private to it.
        cmd.args([
            "sh",
            "-c",
            "mount -t tmpfs lab-pod /var && \
             mkdir -p /var/run/secrets/kubernetes.io/serviceaccount && \
             mount --bind \"$0\" /var/run/secrets/kubernetes.io/serviceaccount && \
             exec \"$@\"",
        ])
        .arg(sa);
    }
    cmd.arg(&launch.program)
        .args(&launch.args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", launch.program.display()))?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    if let Some(pid) = pid {
        let _ = std::fs::write(&launch.pid_file, pid.to_string());
    }
    update(view, |v| {
        v.running = true;
        v.started_at = Some(now());
        v.ready = matches!(readiness, Readiness::Running);
    });
    let (period, threshold) = match readiness {
        Readiness::Http(_, p) => (Duration::from_secs(p.period), p.failure_threshold),
        // Quick until the stand-in listens (it does within milliseconds).
        Readiness::Tcp(_) => (Duration::from_millis(200), 3),
        Readiness::Running => (Duration::from_secs(3600), 1),
    };
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(period);
    let (live_period, live_delay) = checks
        .liveness
        .as_ref()
        .map_or((3600, 0), |(_, p)| (p.period, p.initial_delay));
    let mut live_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(live_delay.max(1)),
        Duration::from_secs(live_period),
    );
    let mut live_failures = 0u32;
    loop {
        tokio::select! {
            _ = live_tick.tick(), if checks.liveness.is_some() => {
                let Some((ip, probe)) = &checks.liveness else { continue };
                if http_ok(SocketAddr::new(*ip, probe.port), probe).await {
                    live_failures = 0;
                } else {
                    live_failures += 1;
                }
                if live_failures >= probe.failure_threshold {
                    append_log(launch, "lab agent: liveness probe failed; restarting the container");
                    if let Some(pid) = pid {
                        let target = nix::unistd::Pid::from_raw(pid);
                        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
                        if tokio::time::timeout(grace, child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                    }
                    let _ = child.wait().await;
                    return Ok(Some(137));
                }
            }
            status = child.wait() => {
                let status = status.context("cannot wait for a container")?;
                use std::os::unix::process::ExitStatusExt as _;
                let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(128);
                return Ok(Some(code));
            }
            _ = stop.changed() => {
                if let Some(pid) = pid {
                    let target = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                }
                let _ = child.wait().await;
                update(view, |v| { v.running = false; v.ready = false; });
                return Ok(None);
            }
            _ = tick.tick() => {
                let ok = match readiness {
                    Readiness::Running => true,
                    Readiness::Tcp(addr) => connect(*addr).await.is_ok(),
                    Readiness::Http(ip, probe) => http_ok(SocketAddr::new(*ip, probe.port), probe).await,
                };
                failures = if ok { 0 } else { failures + 1 };
                let ready = ok || (failures < threshold && view.lock().is_ok_and(|v| v.ready));
                update(view, |v| v.ready = ready);
                if ready && matches!(readiness, Readiness::Tcp(_)) && tick.period() < Duration::from_secs(5) {
                    tick = tokio::time::interval(Duration::from_secs(5));
                    tick.tick().await;
                }
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    Ok(tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await??)
}

/// The probe's HTTP/1.0 GET (over TLS for `scheme: HTTPS`, accepting any
/// certificate): true when the status is 2xx or 3xx (as the kubelet).
pub async fn http_ok(addr: SocketAddr, probe: &HttpProbe) -> bool {
    let probe = async {
        let tcp = connect(addr).await?;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lab-agent\r\n\r\n",
            probe.path
        );
        let mut head = [0u8; 12];
        if probe.https {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut s = tokio_rustls::TlsConnector::from(super::probe_tls::insecure_client()?)
                .connect(name, tcp)
                .await?;
            s.write_all(request.as_bytes()).await?;
            s.read_exact(&mut head).await?;
        } else {
            let mut s = tcp;
            s.write_all(request.as_bytes()).await?;
            s.read_exact(&mut head).await?;
        }
        let code = std::str::from_utf8(&head[9..12])?.parse::<u16>()?;
        anyhow::Ok((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

//! Long-running lab processes: started detached with a pid file and a log
//! file under the state directory, stopped by pid (never by name).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

/// A daemon the lab runs: a tool with arguments, maybe inside a namespace.
#[derive(Clone, Debug)]
pub struct Daemon {
    /// Name used for the pid and log files (`etcd`, `kube-apiserver`, …).
    pub name: String,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The network namespace to run it in; the root namespace if `None`.
    pub netns: Option<String>,
}

/// Where daemons keep their pid and log files.
#[derive(Clone, Debug)]
pub struct Supervisor {
    pids: PathBuf,
    logs: PathBuf,
}

/// A daemon as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonStatus {
    /// The daemon's name.
    pub name: String,
    /// Its pid, if a pid file exists.
    pub pid: Option<i32>,
    /// Whether that pid is alive and still the lab's process.
    pub running: bool,
    /// Its log file.
    pub log: PathBuf,
}

impl Supervisor {
    /// Pid files in `state/pids`, logs in `state/logs`.
    pub fn new(state: &Path) -> Self {
        Self {
            pids: state.join("pids"),
            logs: state.join("logs"),
        }
    }

    /// The log file of a daemon.
    pub fn log_of(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `daemon` detached from the caller (its own process group, so
    /// Ctrl-C on `cargo lab up` does not reach it). Its output is appended to
    /// its log file, so a restarted daemon keeps the log of its first run.
    pub fn start(&self, daemon: &Daemon) -> Result<i32> {
        std::fs::create_dir_all(&self.pids).context("cannot create the pid directory")?;
        std::fs::create_dir_all(&self.logs).context("cannot create the log directory")?;
        let log_path = self.log_of(&daemon.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log_err = log.try_clone().context("cannot duplicate a log file")?;
        let mut cmd = match &daemon.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&daemon.program);
                c
            }
            None => Command::new(&daemon.program),
        };
        let child = cmd
            .args(&daemon.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", daemon.program.display()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        std::fs::write(self.pid_file(&daemon.name), pid.to_string())
            .with_context(|| format!("cannot write the pid file of {}", daemon.name))?;
        Ok(pid)
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.pids.join(format!("{name}.pid"))
    }

    /// Stops the daemon `name` (SIGTERM, SIGKILL after five seconds) if it
    /// runs, removes its pid file, and returns how it ran: its executable and
    /// arguments as the kernel reports them, so that it can be started again
    /// exactly as it was. Only the pid in the pid file is signalled, and only
    /// while it still runs `program` in the caller's network namespace.
    pub fn stop(&self, name: &str, program: &Path) -> Result<Option<Daemon>> {
        let mut ran = None;
        if let Some(pid) = self.pid(name).filter(|p| alive(*p)) {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .with_context(|| format!("cannot read the executable of pid {pid} ({name})"))?;
            anyhow::ensure!(
                exe == program,
                "pid {pid} of {name} runs {}, not {}: not stopping it",
                exe.display(),
                program.display()
            );
            let netns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
            anyhow::ensure!(
                netns(&pid.to_string()) == netns("self"),
                "{name} runs in another network namespace: not stopping it"
            );
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .with_context(|| format!("cannot read the command line of {name}"))?;
            let args = cmdline
                .split(|b| *b == 0)
                .skip(1)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            stop(pid);
            ran = Some(Daemon {
                name: name.to_owned(),
                program: exe,
                args,
                netns: None,
            });
        }
        match std::fs::remove_file(self.pid_file(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove the pid file of {name}"))
            }
            _ => Ok(ran),
        }
    }

    /// Whether a daemon started by the lab is running.
    pub fn running(&self, name: &str) -> bool {
        self.pid(name).is_some_and(alive)
    }

    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.pid_file(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Every daemon with a pid file.
    pub fn status(&self) -> Vec<DaemonStatus> {
        let mut names: Vec<String> = std::fs::read_dir(&self.pids)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".pid"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let pid = self.pid(&name);
                DaemonStatus {
                    running: pid.is_some_and(alive),
                    pid,
                    log: self.log_of(&name),
                    name,
                }
            })
            .collect()
    }

    /// Stops every daemon with a pid file, in reverse start order is not
    /// needed: each is stopped gracefully, then killed after a grace period.
    pub fn stop_all(&self, owned: impl Fn(i32) -> bool) -> Result<()> {
        for d in self.status() {
            if let Some(pid) = d.pid.filter(|p| owned(*p)) {
                stop(pid);
            }
            let _ = std::fs::remove_file(self.pid_file(&d.name));
        }
        Ok(())
    }
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL after five seconds.
pub fn stop(pid: i32) {
    let target = Pid::from_raw(pid);
    if kill(target, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = kill(target, Signal::SIGKILL);
    }
}

/// SIGKILL, at once.
pub fn kill_now(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Pids whose executable lies under `dir` and whose command line mentions
/// `marker`: the lab's daemons even when their pid files are gone (a crash).
pub fn find(dir: &Path, marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"));
            matches!((exe, cmdline), (Ok(exe), Ok(cmd))
                if exe.starts_with(dir) && String::from_utf8_lossy(&cmd).contains(marker))
        })
        .collect()
}

//! A Jepsen-style history of Service allocation: every version of the watched
//! Services as one watch delivered them, with the causes the test declared,
//! and a pure check that no IP was held twice and no IP moved without a
//! reason.
//!
//! [`Recorder`] is the edge: one `Api::<Service>::all` watch, filtered
//! client-side by [`Scope`], appends [`Entry`]s to a [`History`]. One watch
//! stream delivers events in the API server's order (etcd revisions), across
//! namespaces, so the history is totally ordered; causes the test declares
//! with [`Recorder::cause`] are appended to the same log under the same lock,
//! so a cause declared before the test acts precedes every event the action
//! leads to. [`History::check`] replays the entries in that order with no I/O
//! and returns a [`Report`].
//!
//! A watch restart (the first list, a `410 Gone`, a dropped connection)
//! relists: kube's watcher emits `Init`, the listed objects as `InitApply`,
//! then `InitDone`. The recorder keeps such a list as one [`Entry::Relist`],
//! which the check applies as one step (the list is a snapshot at a single
//! revision): every listed Service takes its listed version, and every live
//! Service missing from the list was deleted meanwhile. A Service seen again
//! with another uid was deleted and created anew.
//!
//! What the check counts as holding an IP: a live Service of type
//! LoadBalancer holds the IPs in its `status.loadBalancer.ingress`; a deleted
//! Service, one of another type or one with no status holds nothing. After
//! each step it requires:
//! - no IP held by two live Services unless all its holders carry the same
//!   non-empty sharing key ([`Violation::DoubleAssignment`]). When nobody took
//!   the IP and the holders' keys merely stopped matching, the controller may
//!   separate them later; it is a violation only if it never does;
//! - no IP lost by a Service that stays a live LoadBalancer
//!   ([`Violation::UnexplainedMove`]) unless its [`Inputs`] changed since it
//!   got that IP (the losing version included), a [`Cause::PoolChanged`] for
//!   the pool its output annotation named was declared before, or
//!   [`Cause::Any`] was. Gaining an IP (a first one, a missing family) is not
//!   a move.
//!
//! Limits: a watch sees the versions the API server sends, not every write.
//! After a relist the versions between the last event and the list are gone
//! (etcd compacted them, or the watch never sent them), so a double
//! assignment that began and ended inside that gap is invisible, and an input
//! change that was made and undone inside it cannot explain a move. Causes
//! and input changes excuse moves from then on, never only for a while. With
//! a label-selected [`Scope`], a Service whose labels stop matching looks
//! deleted. Sharing is judged by keys alone, not by the ports the controller
//! also requires to differ. Times are the local receive times, for reading;
//! the order of the log, not the times, decides what precedes what.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ferrolb_crds::annotations;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::checker::{Stamp, now};

/// How long [`Recorder::stop`] waits for the watch's first list.
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Recorder::stop`] waits for the watch to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often it compares a fresh list with what was recorded meanwhile.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);
/// The input annotations, by their canonical spelling; their MetalLB aliases
/// are inputs too.
const INPUT_ANNOTATIONS: [&str; 3] = [
    annotations::LOAD_BALANCER_IPS,
    annotations::ADDRESS_POOL,
    annotations::ALLOW_SHARED_IP,
];
/// How many explained moves and flaps a report prints before summarising.
const LISTED: usize = 20;

/// A Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceRef {
    /// The Service `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which Services a [`Recorder`] follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every Service in these namespaces (filtered client-side, so one watch
    /// keeps one order across them).
    Namespaces(BTreeSet<String>),
    /// Every Service in all namespaces matching a label selector (`app=web`).
    /// A Service whose labels stop matching is seen as deleted.
    Labelled(String),
}

impl Scope {
    /// Every Service in `names`.
    pub fn namespaces<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Namespaces(names.into_iter().map(Into::into).collect())
    }

    /// Every Service in `name`.
    pub fn namespace(name: &str) -> Self {
        Self::namespaces([name])
    }

    /// Every Service matching `selector`, in all namespaces.
    pub fn labelled(selector: impl Into<String>) -> Self {
        Self::Labelled(selector.into())
    }

    fn watch_config(&self) -> watcher::Config {
        // The default list semantic is MostRecent: a relist is a quorum read,
        // never an older cached state that would look like moves back.
        let config = watcher::Config::default();
        match self {
            Self::Namespaces(_) => config,
            Self::Labelled(selector) => config.labels(selector),
        }
    }

    fn list_params(&self) -> ListParams {
        match self {
            Self::Namespaces(_) => ListParams::default(),
            Self::Labelled(selector) => ListParams::default().labels(selector),
        }
    }

    fn admits(&self, service: &Service) -> bool {
        match self {
            Self::Namespaces(names) => service
                .metadata
                .namespace
                .as_ref()
                .is_some_and(|ns| names.contains(ns)),
            Self::Labelled(_) => true,
        }
    }
}

/// What may legitimately change a Service's IPs: when any of it changes, the
/// controller may choose again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// `spec.type`.
    pub service_type: Option<String>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.loadBalancerIP`.
    pub load_balancer_ip: Option<String>,
    /// `spec.ipFamilies`.
    pub ip_families: Vec<String>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<String>,
    /// `spec.ports` as (protocol, port), in order.
    pub ports: Vec<(String, i32)>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: Option<String>,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// The requested IPs, pool and sharing key annotations, under every
    /// spelling present.
    pub annotations: BTreeMap<String, String>,
}

impl Inputs {
    /// The inputs of `service`.
    pub fn of(service: &Service) -> Self {
        let spec = service.spec.as_ref();
        let given = service.metadata.annotations.as_ref();
        let annotations = INPUT_ANNOTATIONS
            .iter()
            .flat_map(|canonical| annotations::spellings(canonical))
            .filter_map(|name| {
                let value = given?.get(&name)?.clone();
                Some((name, value))
            })
            .collect();
        Self {
            service_type: spec.and_then(|s| s.type_.clone()),
            load_balancer_class: spec.and_then(|s| s.load_balancer_class.clone()),
            load_balancer_ip: spec.and_then(|s| s.load_balancer_ip.clone()),
            ip_families: spec.and_then(|s| s.ip_families.clone()).unwrap_or_default(),
            ip_family_policy: spec.and_then(|s| s.ip_family_policy.clone()),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
                .collect(),
            external_traffic_policy: spec.and_then(|s| s.external_traffic_policy.clone()),
            selector: spec.and_then(|s| s.selector.clone()).unwrap_or_default(),
            annotations,
        }
    }
}

/// One version of a Service, as the watch delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// When the recorder received it.
    pub at: Stamp,
    /// Which Service.
    pub service: ServiceRef,
    /// `metadata.uid`: a new uid under a known name is a new Service.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// Whether this is the Service's deletion (its last state).
    pub deleted: bool,
    /// The IPs of `status.loadBalancer.ingress`, in order (hostnames and
    /// unparsable entries left out).
    pub ips: Vec<IpAddr>,
    /// The output annotation `ferrolb.io/ip-allocated-from-pool`.
    pub pool: Option<String>,
    /// The first non-empty `allow-shared-ip` spelling, trimmed.
    pub sharing_key: Option<String>,
    /// What may legitimately change its IPs.
    pub inputs: Inputs,
}

impl Observation {
    /// The version `service` received `at`; `deleted` for a deletion.
    pub fn of(service: &Service, at: Stamp, deleted: bool) -> Self {
        let meta = &service.metadata;
        let annotation = |canonical: &str| {
            annotations::spellings(canonical)
                .iter()
                .filter_map(|name| meta.annotations.as_ref()?.get(name))
                .map(|v| v.trim())
                .find(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let ips = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        Self {
            at,
            service: ServiceRef::new(
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            ),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            deleted,
            ips,
            pool: annotation(annotations::IP_ALLOCATED_FROM_POOL),
            sharing_key: annotation(annotations::ALLOW_SHARED_IP),
            inputs: Inputs::of(service),
        }
    }

    /// Whether the Service is of type LoadBalancer.
    pub fn is_load_balancer(&self) -> bool {
        self.inputs.service_type.as_deref() == Some("LoadBalancer")
    }

    /// The IPs the Service holds in this version: none once deleted or when
    /// not of type LoadBalancer.
    pub fn held(&self) -> Vec<IpAddr> {
        if self.deleted || !self.is_load_balancer() {
            Vec::new()
        } else {
            self.ips.clone()
        }
    }
}

/// A reason, declared by the test, for Services to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The pool was shrunk, edited or deleted: Services allocated from it
    /// (output annotation) may move from now on.
    PoolChanged {
        /// The pool's name.
        pool: String,
    },
    /// Anything may move from now on (use sparingly: it ends the move check).
    Any,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PoolChanged { pool } => write!(f, "pool {pool} changed"),
            Self::Any => f.write_str("anything may move"),
        }
    }
}

/// One entry of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A watch event: a new version of a Service, or its deletion.
    Version(Box<Observation>),
    /// A (re)list: the state of every Service in scope at one revision.
    /// Services missing from it were deleted.
    Relist {
        /// When the list was complete.
        at: Stamp,
        /// The listed versions.
        versions: Vec<Observation>,
    },
    /// A cause the test declared.
    Declared {
        /// When.
        at: Stamp,
        /// What may move from now on.
        cause: Cause,
    },
    /// The watch failed (it retries, then relists).
    WatchError {
        /// When.
        at: Stamp,
        /// The error.
        message: String,
    },
}

impl Entry {
    /// When it was recorded.
    pub fn at(&self) -> Stamp {
        match self {
            Self::Version(o) => o.at,
            Self::Relist { at, .. } | Self::Declared { at, .. } | Self::WatchError { at, .. } => {
                *at
            }
        }
    }
}

/// Everything a [`Recorder`] saw, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    entries: Vec<Entry>,
}

impl From<Vec<Entry>> for History {
    fn from(entries: Vec<Entry>) -> Self {
        Self { entries }
    }
}

impl History {
    /// Appends `entry`.
    pub fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many Service versions were observed (events and listed objects).
    pub fn len(&self) -> usize {
        self.versions().count()
    }

    /// Every Service version observed, in order.
    pub fn versions(&self) -> impl Iterator<Item = &Observation> {
        self.entries.iter().flat_map(|e| match e {
            Entry::Version(v) => std::slice::from_ref(v.as_ref()),
            Entry::Relist { versions, .. } => versions.as_slice(),
            Entry::Declared { .. } | Entry::WatchError { .. } => &[],
        })
    }

    /// Whether no Service version was observed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The IPs the Service `namespace/name` held over the history: each
    /// distinct list (consecutive repeats merged) with when it began. An empty
    /// list is a time holding nothing (no IP yet, deleted, cleared).
    pub fn ips_of(&self, namespace: &str, name: &str) -> Vec<(Stamp, Vec<IpAddr>)> {
        self.replay()
            .timelines
            .remove(&ServiceRef::new(namespace, name))
            .unwrap_or_default()
    }

    /// Checks the history: no IP held by two Services that do not share it,
    /// no IP lost without a cause.
    pub fn check(&self) -> Report {
        self.replay().report
    }

    fn replay(&self) -> Replay {
        let mut replay = Replay::default();
        for entry in &self.entries {
            replay.apply(entry);
        }
        replay.finish(self);
        replay
    }
}

/// Why a move was allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The Service's inputs changed since it got the IPs it lost.
    InputsChanged,
    /// A change of the pool it was allocated from was declared.
    PoolChanged(String),
    /// [`Cause::Any`] was declared.
    Any,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InputsChanged => f.write_str("its inputs changed"),
            Self::PoolChanged(pool) => write!(f, "pool {pool} changed"),
            Self::Any => f.write_str("anything may move"),
        }
    }
}

/// A Service losing IPs it held (while staying a live LoadBalancer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Which Service.
    pub service: ServiceRef,
    /// What it held before.
    pub from: Vec<IpAddr>,
    /// What it held after.
    pub to: Vec<IpAddr>,
    /// When.
    pub at: Stamp,
    /// The version that showed it.
    pub resource_version: String,
    /// Why it was allowed, if it was.
    pub because: Option<Reason>,
}

/// An IP that left a Service and came back to it (not a violation: each move
/// is checked on its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flap {
    /// Which Service.
    pub service: ServiceRef,
    /// The IP.
    pub ip: IpAddr,
    /// When it left.
    pub left: Stamp,
    /// When it came back.
    pub back: Stamp,
}

/// A broken promise of allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Several live Services held `ip` at once without all carrying the same
    /// non-empty sharing key.
    DoubleAssignment {
        /// The IP.
        ip: IpAddr,
        /// The Services holding it when it began.
        services: Vec<ServiceRef>,
        /// Their sharing keys, in the order of `services`.
        sharing_keys: Vec<Option<String>>,
        /// When it began. One that began because sharing keys stopped
        /// matching (no Service took the IP) is reported only if the Services
        /// were never separated.
        at: Stamp,
        /// When it ended (`None`: still at the end of the history).
        until: Option<Stamp>,
    },
    /// A Service lost IPs it held with no cause.
    UnexplainedMove {
        /// Which Service.
        service: ServiceRef,
        /// What it held before.
        from: Vec<IpAddr>,
        /// What it held after.
        to: Vec<IpAddr>,
        /// When.
        at: Stamp,
        /// The version that showed it.
        resource_version: String,
    },
    /// The watch failed and never completed a list: nothing was checked.
    NeverListed {
        /// When it last failed.
        at: Stamp,
        /// How.
        error: String,
    },
}

impl Violation {
    /// When it began.
    pub fn at(&self) -> Stamp {
        match self {
            Self::DoubleAssignment { at, .. }
            | Self::UnexplainedMove { at, .. }
            | Self::NeverListed { at, .. } => *at,
        }
    }

    fn describe(&self, start: Stamp) -> String {
        match self {
            Self::DoubleAssignment {
                ip,
                services,
                sharing_keys,
                at,
                until,
            } => {
                let holders: Vec<String> = services
                    .iter()
                    .zip(sharing_keys)
                    .map(|(s, k)| match k {
                        Some(k) => format!("{s} (key {k:?})"),
                        None => format!("{s} (no key)"),
                    })
                    .collect();
                let until = match until {
                    Some(t) => format!("until {}", offset(*t, start)),
                    None => "until the end".to_owned(),
                };
                format!(
                    "{}  {ip} held at once by {}, {until}",
                    offset(*at, start),
                    holders.join(" and ")
                )
            }
            Self::UnexplainedMove {
                service,
                from,
                to,
                at,
                resource_version,
            } => format!(
                "{}  {service} moved from {} to {} with no cause (resourceVersion {resource_version})",
                offset(*at, start),
                list(from),
                list(to)
            ),
            Self::NeverListed { at, error } => format!(
                "{}  the Service watch never listed, so nothing was checked: {error}",
                offset(*at, start)
            ),
        }
    }
}

/// What [`History::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// When the history began.
    pub start: Stamp,
    /// When it ended.
    pub end: Stamp,
    /// Service versions observed.
    pub versions: usize,
    /// Distinct Services (by namespace and name) observed.
    pub services: usize,
    /// Lists, the first one included.
    pub lists: usize,
    /// The watch's errors.
    pub watch_errors: Vec<(Stamp, String)>,
    /// The causes declared.
    pub causes: Vec<(Stamp, Cause)>,
    /// Every move, explained or not.
    pub moves: Vec<Move>,
    /// IPs that came back to a Service they had left.
    pub flaps: Vec<Flap>,
    /// What broke the promises, in order.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether nothing broke the promises.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Fails with the whole account unless the history is clean.
    pub fn assert_clean(&self) -> Result<()> {
        if !self.is_clean() {
            bail!("{self}");
        }
        Ok(())
    }

    /// How many times `namespace/name` moved.
    pub fn moves_of(&self, namespace: &str, name: &str) -> usize {
        self.moves
            .iter()
            .filter(|m| m.service.namespace == namespace && m.service.name == name)
            .count()
    }

    /// Moves with a cause.
    pub fn explained_moves(&self) -> usize {
        self.moves.iter().filter(|m| m.because.is_some()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = self.start;
        writeln!(
            f,
            "Service allocation history: {} versions of {} Services over {:.3}s from unix time {:.3} \
             ({} lists, {} watch errors)",
            self.versions,
            self.services,
            self.end.saturating_sub(start).as_secs_f64(),
            start.as_secs_f64(),
            self.lists,
            self.watch_errors.len(),
        )?;
        writeln!(
            f,
            "moves: {} ({} explained); flaps: {}",
            self.moves.len(),
            self.explained_moves(),
            self.flaps.len()
        )?;
        if self.violations.is_empty() {
            writeln!(f, "no violations")?;
        } else {
            writeln!(f, "violations: {}", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  {}", v.describe(start))?;
            }
        }
        if !self.causes.is_empty() {
            writeln!(f, "causes declared:")?;
            for (at, cause) in &self.causes {
                writeln!(f, "  {}  {cause}", offset(*at, start))?;
            }
        }
        let explained: Vec<(&Move, &Reason)> = self
            .moves
            .iter()
            .filter_map(|m| Some((m, m.because.as_ref()?)))
            .collect();
        if !explained.is_empty() {
            writeln!(f, "explained moves:")?;
            for (m, because) in explained.iter().take(LISTED) {
                writeln!(
                    f,
                    "  {}  {} moved from {} to {}: {because}",
                    offset(m.at, start),
                    m.service,
                    list(&m.from),
                    list(&m.to)
                )?;
            }
            if explained.len() > LISTED {
                writeln!(f, "  … and {} more", explained.len() - LISTED)?;
            }
        }
        if !self.flaps.is_empty() {
            writeln!(f, "flaps:")?;
            for flap in self.flaps.iter().take(LISTED) {
                writeln!(
                    f,
                    "  {}  {} got {} back (it left at {})",
                    offset(flap.back, start),
                    flap.service,
                    flap.ip,
                    offset(flap.left, start)
                )?;
            }
            if self.flaps.len() > LISTED {
                writeln!(f, "  … and {} more", self.flaps.len() - LISTED)?;
            }
        }
        if !self.watch_errors.is_empty() {
            writeln!(f, "watch errors:")?;
            for (at, message) in &self.watch_errors {
                writeln!(f, "  {}  {message}", offset(*at, start))?;
            }
        }
        Ok(())
    }
}

fn offset(at: Stamp, start: Stamp) -> String {
    format!("+{:.3}s", at.saturating_sub(start).as_secs_f64())
}

fn list(ips: &[IpAddr]) -> String {
    let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!("[{}]", ips.join(", "))
}

/// A live Service during a replay.
#[derive(Debug)]
struct Live {
    latest: Observation,
    /// What it holds, in status order.
    held: Vec<IpAddr>,
    /// Per IP held: whether its inputs changed since it got the IP.
    inputs_changed: BTreeMap<IpAddr, bool>,
    /// IPs it lost while staying live, with when.
    left: BTreeMap<IpAddr, Stamp>,
}

/// IPs held by several Services that do not share them.
#[derive(Debug)]
struct Conflict {
    services: Vec<ServiceRef>,
    since: Stamp,
    /// The indexes of its violations; none while excused (it began because
    /// sharing keys stopped matching and may still be separated).
    violations: Vec<usize>,
}

/// The history applied entry by entry: the state machine behind the check.
#[derive(Debug, Default)]
struct Replay {
    live: BTreeMap<ServiceRef, Live>,
    holders: BTreeMap<IpAddr, BTreeSet<ServiceRef>>,
    pools_changed: BTreeSet<String>,
    anything_goes: bool,
    conflicts: BTreeMap<IpAddr, Conflict>,
    timelines: BTreeMap<ServiceRef, Vec<(Stamp, Vec<IpAddr>)>>,
    report: Report,
}

/// What one step (an event or a list) did to the IPs.
#[derive(Debug, Default)]
struct Touched {
    /// IPs gained or lost.
    ips: BTreeSet<IpAddr>,
    /// IPs some Service newly holds.
    acquired: BTreeSet<IpAddr>,
}

impl Replay {
    fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Version(version) => {
                let mut touched = Touched::default();
                self.version(version, &mut touched);
                self.check_conflicts(version.at, &touched);
            }
            Entry::Relist { at, versions } => {
                self.report.lists += 1;
                let mut touched = Touched::default();
                let listed: BTreeSet<&ServiceRef> = versions.iter().map(|v| &v.service).collect();
                let gone: Vec<ServiceRef> = self
                    .live
                    .keys()
                    .filter(|s| !listed.contains(s))
                    .cloned()
                    .collect();
                for service in &gone {
                    self.remove(service, *at, &mut touched);
                }
                for version in versions {
                    self.version(version, &mut touched);
                }
                self.check_conflicts(*at, &touched);
            }
            Entry::Declared { at, cause } => {
                match cause {
                    Cause::PoolChanged { pool } => {
                        self.pools_changed.insert(pool.clone());
                    }
                    Cause::Any => self.anything_goes = true,
                }
                self.report.causes.push((*at, cause.clone()));
            }
            Entry::WatchError { at, message } => {
                self.report.watch_errors.push((*at, message.clone()));
            }
        }
    }

    fn version(&mut self, version: &Observation, touched: &mut Touched) {
        let service = &version.service;
        if self
            .live
            .get(service)
            .is_some_and(|live| live.latest.uid != version.uid)
        {
            // Deleted and created anew between two events we saw.
            self.remove(service, version.at, touched);
        }
        if version.deleted {
            self.remove(service, version.at, touched);
            return;
        }
        let held = version.held();
        let timeline = self.timelines.entry(service.clone()).or_default();
        note(timeline, version.at, &held);
        let Some(live) = self.live.get_mut(service) else {
            for ip in &held {
                touched.ips.insert(*ip);
                touched.acquired.insert(*ip);
                self.holders.entry(*ip).or_default().insert(service.clone());
            }
            self.live.insert(
                service.clone(),
                Live {
                    latest: version.clone(),
                    inputs_changed: held.iter().map(|ip| (*ip, false)).collect(),
                    held,
                    left: BTreeMap::new(),
                },
            );
            return;
        };
        if live.latest.inputs != version.inputs {
            live.inputs_changed.values_mut().for_each(|c| *c = true);
        }
        let lost: Vec<IpAddr> = live
            .held
            .iter()
            .filter(|ip| !held.contains(ip))
            .copied()
            .collect();
        // Leaving type LoadBalancer releases the IPs, like a deletion.
        if !lost.is_empty() && version.is_load_balancer() {
            let because = if lost
                .iter()
                .all(|ip| live.inputs_changed.get(ip).copied().unwrap_or(false))
            {
                Some(Reason::InputsChanged)
            } else if let Some(pool) = live
                .latest
                .pool
                .as_ref()
                .filter(|p| self.pools_changed.contains(*p))
            {
                Some(Reason::PoolChanged(pool.clone()))
            } else if self.anything_goes {
                Some(Reason::Any)
            } else {
                None
            };
            if because.is_none() {
                self.report.violations.push(Violation::UnexplainedMove {
                    service: service.clone(),
                    from: live.held.clone(),
                    to: held.clone(),
                    at: version.at,
                    resource_version: version.resource_version.clone(),
                });
            }
            self.report.moves.push(Move {
                service: service.clone(),
                from: live.held.clone(),
                to: held.clone(),
                at: version.at,
                resource_version: version.resource_version.clone(),
                because,
            });
            for ip in &lost {
                live.left.insert(*ip, version.at);
            }
        }
        for ip in &lost {
            live.inputs_changed.remove(ip);
            touched.ips.insert(*ip);
            if let Some(holders) = self.holders.get_mut(ip) {
                holders.remove(service);
            }
        }
        for ip in held.iter().filter(|ip| !live.held.contains(ip)) {
            if let Some(left) = live.left.remove(ip) {
                self.report.flaps.push(Flap {
                    service: service.clone(),
                    ip: *ip,
                    left,
                    back: version.at,
                });
            }
            live.inputs_changed.insert(*ip, false);
            touched.ips.insert(*ip);
            touched.acquired.insert(*ip);
            self.holders.entry(*ip).or_default().insert(service.clone());
        }
        // A changed sharing key may make or end a conflict on what it keeps.
        touched.ips.extend(held.iter().copied());
        live.held = held;
        live.latest = version.clone();
    }

    fn remove(&mut self, service: &ServiceRef, at: Stamp, touched: &mut Touched) {
        let Some(live) = self.live.remove(service) else {
            return;
        };
        for ip in &live.held {
            touched.ips.insert(*ip);
            if let Some(holders) = self.holders.get_mut(ip) {
                holders.remove(service);
            }
        }
        note(self.timelines.entry(service.clone()).or_default(), at, &[]);
    }

    /// Checks the IPs a step touched, once the whole step is applied (a list
    /// is one snapshot: no order inside it).
    fn check_conflicts(&mut self, at: Stamp, touched: &Touched) {
        for ip in &touched.ips {
            let holders: Vec<&Live> = self
                .holders
                .get(ip)
                .into_iter()
                .flatten()
                .filter_map(|s| self.live.get(s))
                .collect();
            let shared = holders.first().and_then(|h| h.latest.sharing_key.as_ref());
            let conflicting = holders.len() > 1
                && !(shared.is_some()
                    && holders
                        .iter()
                        .all(|h| h.latest.sharing_key.as_ref() == shared));
            if !conflicting {
                let ended = self.conflicts.remove(ip).map(|c| c.violations);
                for index in ended.into_iter().flatten() {
                    if let Some(Violation::DoubleAssignment { until, .. }) =
                        self.report.violations.get_mut(index)
                    {
                        *until = Some(at);
                    }
                }
                continue;
            }
            let services: Vec<ServiceRef> =
                holders.iter().map(|h| h.latest.service.clone()).collect();
            let sharing_keys: Vec<Option<String>> = holders
                .iter()
                .map(|h| h.latest.sharing_key.clone())
                .collect();
            let conflict = self.conflicts.entry(*ip).or_insert_with(|| Conflict {
                services: Vec::new(),
                since: at,
                violations: Vec::new(),
            });
            // A Service took an IP others hold: reported at once (again when
            // another joins). Otherwise nobody took it, sharing keys stopped
            // matching, and the controller may separate the Services after it
            // sees that: excused until the end.
            if touched.acquired.contains(ip)
                && (conflict.violations.is_empty() || conflict.services != services)
            {
                self.report.violations.push(Violation::DoubleAssignment {
                    ip: *ip,
                    services: services.clone(),
                    sharing_keys,
                    at,
                    until: None,
                });
                conflict.violations.push(self.report.violations.len() - 1);
            }
            conflict.services = services;
        }
    }

    fn finish(&mut self, history: &History) {
        let unseparated: Vec<Violation> = self
            .conflicts
            .iter()
            .filter(|(_, c)| c.violations.is_empty())
            .map(|(ip, c)| Violation::DoubleAssignment {
                ip: *ip,
                services: c.services.clone(),
                sharing_keys: c
                    .services
                    .iter()
                    .map(|s| self.live.get(s).and_then(|l| l.latest.sharing_key.clone()))
                    .collect(),
                at: c.since,
                until: None,
            })
            .collect();
        self.report.violations.extend(unseparated);
        if self.report.lists == 0
            && let Some((at, error)) = self.report.watch_errors.last()
        {
            self.report.violations.push(Violation::NeverListed {
                at: *at,
                error: error.clone(),
            });
        }
        self.report.violations.sort_by_key(Violation::at);
        let entries = history.entries();
        self.report.start = entries.first().map(Entry::at).unwrap_or_default();
        self.report.end = entries.last().map(Entry::at).unwrap_or_default();
        self.report.versions = history.len();
        self.report.services = self.timelines.len();
    }
}

/// Appends `held` to a Service's timeline unless it is what it holds already.
fn note(timeline: &mut Vec<(Stamp, Vec<IpAddr>)>, at: Stamp, held: &[IpAddr]) {
    if timeline.last().is_none_or(|(_, last)| last != held) {
        timeline.push((at, held.to_vec()));
    }
}

/// What the recorder's task and the test share.
#[derive(Debug, Default)]
struct Log {
    history: History,
    stopped: bool,
}

/// Records every version of the Services in a [`Scope`] from one watch, and
/// the causes the test declares.
#[derive(Debug)]
pub struct Recorder {
    api: Api<Service>,
    scope: Scope,
    log: Arc<Mutex<Log>>,
    first_list: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts watching the Services in `scope` in a task of the current Tokio
    /// runtime (it panics outside one). What exists already arrives as the
    /// watch's first list; [`Recorder::stop`] waits for that list.
    pub fn start(client: kube::Client, scope: Scope) -> Self {
        let api: Api<Service> = Api::all(client);
        let log = Arc::new(Mutex::new(Log::default()));
        let (listed, first_list) = oneshot::channel();
        let task = tokio::spawn(record(api.clone(), scope.clone(), Arc::clone(&log), listed));
        Self {
            api,
            scope,
            log,
            first_list,
            task,
        }
    }

    /// Declares, now, that `cause` may move Services from now on. Declare it
    /// before making the change, so every move it leads to comes after it.
    pub fn cause(&self, cause: Cause) {
        let mut log = self.lock();
        if !log.stopped {
            log.history.push(Entry::Declared { at: now(), cause });
        }
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History {
        self.lock().history.clone()
    }

    /// Stops recording and returns the history, once the watch has listed and
    /// caught up with the API server: every Service in scope, as a list reads
    /// it now, has been recorded in that version (so, one stream being in
    /// revision order, everything written before the latest of those writes
    /// too). A watch that does not get there within its time is noted in the
    /// history as a watch error; one that never listed makes the check fail.
    pub async fn stop(mut self) -> History {
        let listed = matches!(
            tokio::time::timeout(FIRST_LIST_TIMEOUT, &mut self.first_list).await,
            Ok(Ok(()))
        );
        let behind = if listed {
            self.catch_up().await.err().map(|e| format!("{e:#}"))
        } else {
            Some(format!(
                "the watch did not list within {FIRST_LIST_TIMEOUT:?}: can this client list \
                 and watch Services in all namespaces?"
            ))
        };
        let mut log = self.lock();
        if let Some(message) = behind {
            log.history.push(Entry::WatchError { at: now(), message });
        }
        log.stopped = true;
        std::mem::take(&mut log.history)
    }

    /// Waits until every Service a fresh list returns has been recorded in the
    /// listed version, listing again while Services keep changing.
    async fn catch_up(&self) -> Result<()> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let listed = self
                .api
                .list(&self.scope.list_params())
                .await
                .context("cannot list Services to check the watch caught up")?;
            let seen: HashSet<(String, String)> = self
                .lock()
                .history
                .versions()
                .map(|v| (v.uid.clone(), v.resource_version.clone()))
                .collect();
            let missing = listed
                .items
                .iter()
                .filter(|s| self.scope.admits(s))
                .filter(|s| {
                    let version = (
                        s.metadata.uid.clone().unwrap_or_default(),
                        s.metadata.resource_version.clone().unwrap_or_default(),
                    );
                    !seen.contains(&version)
                })
                .count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the watch had not caught up after {CATCH_UP_TIMEOUT:?}: {missing} Services \
                     listed in versions it never delivered"
                );
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The recorder's task: one watch, its events appended to the log in the
/// order received.
async fn record(
    api: Api<Service>,
    scope: Scope,
    log: Arc<Mutex<Log>>,
    listed: oneshot::Sender<()>,
) {
    let mut listed = Some(listed);
    let mut events = watcher(api, scope.watch_config()).default_backoff().boxed();
    let mut listing: Vec<Observation> = Vec::new();
    while let Some(event) = events.next().await {
        let at = now();
        let entry = match event {
            Ok(watcher::Event::Apply(s)) => scope
                .admits(&s)
                .then(|| Entry::Version(Box::new(Observation::of(&s, at, false)))),
            Ok(watcher::Event::Delete(s)) => scope
                .admits(&s)
                .then(|| Entry::Version(Box::new(Observation::of(&s, at, true)))),
            Ok(watcher::Event::Init) => {
                listing.clear();
                None
            }
            Ok(watcher::Event::InitApply(s)) => {
                if scope.admits(&s) {
                    listing.push(Observation::of(&s, at, false));
                }
                None
            }
            Ok(watcher::Event::InitDone) => Some(Entry::Relist {
                at,
                versions: std::mem::take(&mut listing),
            }),
            Err(e) => {
                tracing::warn!("history's Service watch: {e}");
                Some(Entry::WatchError {
                    at,
                    message: e.to_string(),
                })
            }
        };
        let Some(entry) = entry else {
            continue;
        };
        let is_list = matches!(entry, Entry::Relist { .. });
        {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            if log.stopped {
                return;
            }
            log.history.push(entry);
        }
        if is_list && let Some(listed) = listed.take() {
            let _ = listed.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LAN: &str = "lan";

    /// A version of `ns/name` of type LoadBalancer holding `ips`, allocated
    /// from `lan`.
    fn version(name: &str, ips: &[&str]) -> Observation {
        Observation {
            at: Duration::ZERO,
            service: ServiceRef::new("ns", name),
            uid: format!("uid-{name}"),
            resource_version: String::new(),
            deleted: false,
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            pool: Some(LAN.to_owned()),
            sharing_key: None,
            inputs: Inputs {
                service_type: Some("LoadBalancer".into()),
                ..Inputs::default()
            },
        }
    }

    trait Edit {
        fn key(self, key: &str) -> Self;
        fn pool(self, pool: &str) -> Self;
        fn annotate(self, name: &str, value: &str) -> Self;
        fn uid(self, uid: &str) -> Self;
        fn deleted(self) -> Self;
    }

    impl Edit for Observation {
        fn key(mut self, key: &str) -> Self {
            self.sharing_key = Some(key.to_owned());
            self.inputs
                .annotations
                .insert(annotations::ALLOW_SHARED_IP.into(), key.into());
            self
        }
        fn pool(mut self, pool: &str) -> Self {
            self.pool = Some(pool.to_owned());
            self
        }
        fn annotate(mut self, name: &str, value: &str) -> Self {
            self.inputs.annotations.insert(name.into(), value.into());
            self
        }
        fn uid(mut self, uid: &str) -> Self {
            self.uid = uid.to_owned();
            self
        }
        fn deleted(mut self) -> Self {
            self.deleted = true;
            self
        }
    }

    fn seen(version: Observation) -> Entry {
        Entry::Version(Box::new(version))
    }

    fn list(versions: Vec<Observation>) -> Entry {
        Entry::Relist {
            at: Duration::ZERO,
            versions,
        }
    }

    fn declare(cause: Cause) -> Entry {
        Entry::Declared {
            at: Duration::ZERO,
            cause,
        }
    }

    fn pool_changed(pool: &str) -> Entry {
        declare(Cause::PoolChanged { pool: pool.into() })
    }

    /// A history of `entries`, the n-th at n seconds.
    fn history(entries: Vec<Entry>) -> History {
        let mut history = History::default();
        for (n, mut entry) in entries.into_iter().enumerate() {
            let t = Duration::from_secs(n as u64);
            match &mut entry {
                Entry::Version(v) => v.at = t,
                Entry::Relist { at, versions } => {
                    *at = t;
                    versions.iter_mut().for_each(|v| v.at = t);
                }
                Entry::Declared { at, .. } | Entry::WatchError { at, .. } => *at = t,
            }
            history.push(entry);
        }
        history
    }

    fn secs(n: u64) -> Stamp {
        Duration::from_secs(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn service(name: &str) -> ServiceRef {
        ServiceRef::new("ns", name)
    }

    /// The violations' kinds and times, for short assertions.
    fn kinds(report: &Report) -> Vec<(&'static str, Stamp)> {
        report
            .violations
            .iter()
            .map(|v| match v {
                Violation::DoubleAssignment { .. } => ("double", v.at()),
                Violation::UnexplainedMove { .. } => ("move", v.at()),
                Violation::NeverListed { .. } => ("blind", v.at()),
            })
            .collect()
    }

    #[test]
    fn two_services_holding_one_ip_are_a_double_assignment() {
        let report = history(vec![
            list(vec![]),
            seen(version("a", &["198.18.0.1"])),
            seen(version("b", &["198.18.0.1"])),
        ])
        .check();
        assert_eq!(
            report.violations,
            [Violation::DoubleAssignment {
                ip: ip("198.18.0.1"),
                services: vec![service("a"), service("b")],
                sharing_keys: vec![None, None],
                at: secs(2),
                until: None,
            }]
        );
        assert!(report.assert_clean().is_err());
    }

    #[test]
    fn a_double_assignment_fixed_by_the_next_event_is_still_caught() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("b", &["198.18.0.1"])),
            // Moving b is itself unexplained; only the double matters here.
            declare(Cause::Any),
            seen(version("b", &["198.18.0.2"])),
        ])
        .check();
        assert_eq!(
            report.violations,
            [Violation::DoubleAssignment {
                ip: ip("198.18.0.1"),
                services: vec![service("a"), service("b")],
                sharing_keys: vec![None, None],
                at: secs(1),
                until: Some(secs(3)),
            }]
        );
    }

    #[test]
    fn services_with_the_same_sharing_key_may_share_an_ip() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("k")),
            seen(version("c", &["198.18.0.1"]).key("k")),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
    }

    #[test]
    fn services_with_different_or_missing_sharing_keys_may_not_share() {
        let mismatched = history(vec![
            seen(version("a", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("other")),
        ])
        .check();
        assert_eq!(kinds(&mismatched), [("double", secs(1))]);
        let one_without = history(vec![
            seen(version("a", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"])),
        ])
        .check();
        assert_eq!(kinds(&one_without), [("double", secs(1))]);
        let third_mismatched = history(vec![
            seen(version("a", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("k")),
            seen(version("c", &["198.18.0.1"]).key("x")),
        ])
        .check();
        assert_eq!(kinds(&third_mismatched), [("double", secs(2))]);
    }

    #[test]
    fn services_whose_keys_stop_matching_must_be_separated() {
        let separated = history(vec![
            seen(version("a", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("other")),
            seen(version("b", &["198.18.0.2"]).key("other")),
        ])
        .check();
        assert!(separated.is_clean(), "{separated}");
        assert_eq!(separated.explained_moves(), 1);
        let never = history(vec![
            seen(version("a", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("k")),
            seen(version("b", &["198.18.0.1"]).key("other")),
            seen(version("c", &["198.18.0.5"])),
        ])
        .check();
        assert_eq!(kinds(&never), [("double", secs(2))]);
    }

    #[test]
    fn a_move_after_the_services_inputs_changed_is_explained() {
        let in_the_same_event = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &["198.18.1.1"]).annotate(annotations::ADDRESS_POOL, "other")),
        ])
        .check();
        assert!(in_the_same_event.is_clean(), "{in_the_same_event}");
        let earlier = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &["198.18.0.1"]).annotate("metallb.io/address-pool", "other")),
            seen(version("a", &["198.18.1.1"]).annotate("metallb.io/address-pool", "other")),
        ])
        .check();
        assert!(earlier.is_clean(), "{earlier}");
        assert_eq!(earlier.moves.len(), 1);
        assert_eq!(earlier.moves[0].because, Some(Reason::InputsChanged));
    }

    #[test]
    fn inputs_that_changed_before_the_ip_was_taken_explain_nothing() {
        let report = history(vec![
            seen(version("a", &[]).annotate(annotations::ADDRESS_POOL, "other")),
            seen(version("a", &["198.18.0.1"]).annotate(annotations::ADDRESS_POOL, "other")),
            seen(version("a", &["198.18.0.2"]).annotate(annotations::ADDRESS_POOL, "other")),
        ])
        .check();
        assert_eq!(kinds(&report), [("move", secs(2))]);
    }

    #[test]
    fn a_move_after_its_pool_changed_is_explained() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            pool_changed(LAN),
            seen(version("a", &["198.18.0.9"])),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            report.moves[0].because,
            Some(Reason::PoolChanged(LAN.into()))
        );
    }

    #[test]
    fn a_move_after_another_pool_changed_is_a_violation() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            pool_changed("other"),
            seen(version("a", &["198.18.0.9"])),
        ])
        .check();
        assert_eq!(
            report.violations,
            [Violation::UnexplainedMove {
                service: service("a"),
                from: vec![ip("198.18.0.1")],
                to: vec![ip("198.18.0.9")],
                at: secs(2),
                resource_version: String::new(),
            }]
        );
    }

    #[test]
    fn the_pool_that_counts_is_the_one_before_the_move() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            pool_changed("other"),
            seen(version("a", &["198.18.1.1"]).pool("other")),
        ])
        .check();
        assert_eq!(kinds(&report), [("move", secs(2))]);
    }

    #[test]
    fn a_move_or_a_loss_without_cause_is_a_violation() {
        let moved = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &["198.18.0.2"])),
        ])
        .check();
        assert_eq!(kinds(&moved), [("move", secs(1))]);
        let cleared = history(vec![
            seen(version("a", &["198.18.0.1", "2001:db8::1"])),
            seen(version("a", &["198.18.0.1"])),
        ])
        .check();
        assert_eq!(kinds(&cleared), [("move", secs(1))]);
        let declared_late = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &[])),
            declare(Cause::Any),
        ])
        .check();
        assert_eq!(kinds(&declared_late), [("move", secs(1))]);
    }

    #[test]
    fn cause_any_explains_every_later_move() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            declare(Cause::Any),
            seen(version("a", &["198.18.0.2"])),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.moves_of("ns", "a"), 1);
    }

    #[test]
    fn a_first_ip_or_a_missing_family_is_not_a_move() {
        let report = history(vec![
            seen(version("a", &[])),
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &["198.18.0.1", "2001:db8::1"])),
            seen(version("a", &["2001:db8::1", "198.18.0.1"])),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert!(report.moves.is_empty());
    }

    #[test]
    fn a_deletion_releases_the_ip_for_another_service() {
        let after = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &["198.18.0.1"]).deleted()),
            seen(version("b", &["198.18.0.1"])),
        ])
        .check();
        assert!(after.is_clean(), "{after}");
        assert!(after.moves.is_empty());
        let before = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("b", &["198.18.0.1"])),
            seen(version("a", &["198.18.0.1"]).deleted()),
        ])
        .check();
        assert_eq!(kinds(&before), [("double", secs(1))]);
        let Violation::DoubleAssignment { until, .. } = &before.violations[0] else {
            unreachable!()
        };
        assert_eq!(*until, Some(secs(2)));
    }

    #[test]
    fn leaving_type_load_balancer_releases_the_ip() {
        let mut cluster_ip = version("a", &["198.18.0.1"]);
        cluster_ip.inputs.service_type = Some("ClusterIP".into());
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(cluster_ip),
            seen(version("b", &["198.18.0.1"])),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert!(report.moves.is_empty());
    }

    #[test]
    fn a_service_missing_from_a_relist_was_deleted() {
        let report = history(vec![
            list(vec![version("a", &["198.18.0.1"])]),
            seen(version("c", &["198.18.0.3"])),
            // The watch restarted: a was deleted meanwhile and b took its IP.
            list(vec![
                version("b", &["198.18.0.1"]),
                version("c", &["198.18.0.3"]),
            ]),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.lists, 2);
        let history = history(vec![
            list(vec![version("a", &["198.18.0.1"])]),
            list(vec![]),
        ]);
        assert_eq!(
            history.ips_of("ns", "a"),
            [(secs(0), vec![ip("198.18.0.1")]), (secs(1), vec![])]
        );
    }

    #[test]
    fn a_relist_is_checked_as_one_snapshot() {
        let relisted = history(vec![
            list(vec![
                version("a", &["198.18.0.1"]),
                version("b", &["198.18.0.2"]),
            ]),
            list(vec![
                version("b", &["198.18.0.2"]),
                version("a", &["198.18.0.1"]),
            ]),
        ])
        .check();
        assert!(relisted.is_clean(), "{relisted}");
        assert!(relisted.moves.is_empty());
        // Holding one IP in a snapshot is a double, whatever the list order.
        let doubled = history(vec![list(vec![
            version("a", &["198.18.0.1"]),
            version("b", &["198.18.0.1"]),
        ])])
        .check();
        assert_eq!(kinds(&doubled), [("double", secs(0))]);
        // A move seen only through a relist still needs a cause.
        let moved = history(vec![
            list(vec![version("a", &["198.18.0.1"])]),
            list(vec![version("a", &["198.18.0.7"])]),
        ])
        .check();
        assert_eq!(kinds(&moved), [("move", secs(1))]);
    }

    #[test]
    fn a_new_uid_under_a_known_name_is_a_new_service() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            seen(version("b", &["198.18.0.2"])),
            // a's deletion was not seen: a new a took another IP, c the old one.
            list(vec![
                version("a", &["198.18.0.3"]).uid("uid-a2"),
                version("b", &["198.18.0.2"]),
            ]),
            seen(version("c", &["198.18.0.1"])),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert!(report.moves.is_empty());
    }

    #[test]
    fn an_ip_coming_back_is_a_flap() {
        let report = history(vec![
            seen(version("a", &["198.18.0.1"])),
            pool_changed(LAN),
            seen(version("a", &["198.18.0.2"])),
            seen(version("a", &["198.18.0.1"])),
        ])
        .check();
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            report.flaps,
            [Flap {
                service: service("a"),
                ip: ip("198.18.0.1"),
                left: secs(2),
                back: secs(3),
            }]
        );
    }

    #[test]
    fn ips_of_lists_each_distinct_holding() {
        let history = history(vec![
            seen(version("a", &[])),
            seen(version("a", &["198.18.0.1"])),
            seen(version("a", &["198.18.0.1"]).annotate("x", "y")),
            seen(version("a", &["198.18.0.1"]).deleted()),
            seen(version("a", &["198.18.0.4"]).uid("uid-a2")),
        ]);
        assert_eq!(
            history.ips_of("ns", "a"),
            [
                (secs(0), vec![]),
                (secs(1), vec![ip("198.18.0.1")]),
                (secs(3), vec![]),
                (secs(4), vec![ip("198.18.0.4")]),
            ]
        );
        assert!(history.ips_of("ns", "nobody").is_empty());
        assert_eq!(history.len(), 5);
    }

    #[test]
    fn an_observation_reads_ips_pool_key_and_inputs() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {
                "namespace": "web", "name": "front", "uid": "u1", "resourceVersion": "42",
                "annotations": {
                    "ferrolb.io/ip-allocated-from-pool": "lan",
                    "ferrolb.io/allow-shared-ip": " ",
                    "metallb.universe.tf/allow-shared-ip": " k ",
                    "metallb.io/loadBalancerIPs": "198.18.0.1",
                    "unrelated": "ignored",
                },
            },
            "spec": {
                "type": "LoadBalancer",
                "ipFamilies": ["IPv4"],
                "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
                "selector": {"app": "front"},
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "198.18.0.1"}, {"hostname": "lb.example"}, {"ip": "2001:db8::1"},
            ]}},
        }))
        .unwrap();
        let o = Observation::of(&service, secs(7), false);
        assert_eq!(o.service, ServiceRef::new("web", "front"));
        assert_eq!((o.uid.as_str(), o.resource_version.as_str()), ("u1", "42"));
        assert_eq!(o.ips, [ip("198.18.0.1"), ip("2001:db8::1")]);
        assert_eq!(o.held(), o.ips);
        assert_eq!(o.pool.as_deref(), Some("lan"));
        assert_eq!(o.sharing_key.as_deref(), Some("k"));
        assert_eq!(
            o.inputs.ports,
            [("TCP".to_owned(), 80), ("UDP".to_owned(), 53)]
        );
        assert_eq!(
            o.inputs.annotations.keys().collect::<Vec<_>>(),
            [
                "ferrolb.io/allow-shared-ip",
                "metallb.io/loadBalancerIPs",
                "metallb.universe.tf/allow-shared-ip"
            ]
        );
        assert!(Observation::of(&service, secs(8), true).held().is_empty());
    }

    #[test]
    fn a_namespace_scope_admits_only_its_namespaces() {
        let scope = Scope::namespaces(["web"]);
        let mut service = Service::default();
        service.metadata.namespace = Some("web".into());
        assert!(scope.admits(&service));
        service.metadata.namespace = Some("other".into());
        assert!(!scope.admits(&service));
        assert!(Scope::labelled("app=web").admits(&service));
    }

    #[test]
    fn a_watch_that_never_listed_fails_the_check() {
        let error = || Entry::WatchError {
            at: Duration::ZERO,
            message: "forbidden".into(),
        };
        let blind = history(vec![error(), error()]).check();
        assert_eq!(kinds(&blind), [("blind", secs(1))]);
        assert!(blind.to_string().contains("never listed"), "{blind}");
        let recovered = history(vec![error(), list(vec![])]).check();
        assert!(recovered.is_clean(), "{recovered}");
    }

    #[test]
    fn the_report_is_a_timestamped_account() {
        let report = history(vec![
            list(vec![]),
            seen(version("a", &["198.18.0.1"])),
            seen(version("b", &["198.18.0.1"]).key("k")),
            Entry::WatchError {
                at: Duration::ZERO,
                message: "connection reset".into(),
            },
            pool_changed(LAN),
            seen(version("a", &["198.18.0.2"])),
            seen(version("b", &["198.18.0.3"]).key("k")),
        ])
        .check();
        assert_eq!(kinds(&report), [("double", secs(2))]);
        let text = report.to_string();
        for expected in [
            "4 versions of 2 Services over 6.000s",
            "(1 lists, 1 watch errors)",
            "violations: 1",
            "+2.000s  198.18.0.1 held at once by ns/a (no key) and ns/b (key \"k\"), until +5.000s",
            "+4.000s  pool lan changed",
            "+5.000s  ns/a moved from [198.18.0.1] to [198.18.0.2]: pool lan changed",
            "+3.000s  connection reset",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        assert!(
            report
                .assert_clean()
                .unwrap_err()
                .to_string()
                .contains(&text)
        );
        assert!(History::default().check().assert_clean().is_ok());
    }
}

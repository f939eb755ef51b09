//! The controller's decisions: a synchronous state machine that takes what the
//! watches show (Services, pools, namespaces, the cluster's own networks) and
//! returns what to write.
//!
//! [`Reconciler::restore`] rebuilds the allocator from every Service's status, and
//! each pool's quarantine from the pool's status, before anything new is
//! allocated; [`Reconciler::plan`] then brings every Service and pool in line, as one
//! cheap pass over the cached objects (each allocator call is O(log n)). Nothing here
//! talks to the API server: the runtime executes the [`Plan`] and reports successful
//! writes back with [`Reconciler::written`], so a write the watch has not shown yet is
//! not repeated.
//!
//! Pools in their life cycle:
//! - a pool whose spec cannot be used keeps its last valid version for the Services
//!   holding its IPs, and is frozen (no new allocations) until fixed;
//! - a pool holding assignments carries the [`POOL_FINALIZER`]; when it is deleted it
//!   is frozen and kept until its last Service lets go, unless the user opts in to
//!   moving its Services with the [`FORCE_RELEASE`] annotation;
//! - addresses inside the cluster's own networks are never handed out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_address::Family;
use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::{Resource, ResourceExt};

use crate::allocator::{Allocation, Allocator, FreezeReason, PoolHealth, ServiceKey};
use crate::cluster::{self, Reserved};
use crate::pool::{self, PoolSpecError};
use crate::service::{self, Handling, Input};
use crate::status::{PoolReport, PoolState, ServiceView};

/// The finalizer the controller keeps on a pool while Services hold its IPs.
pub const POOL_FINALIZER: &str = "ferrolb.io/pool-in-use";

/// Annotation on a pool: `"true"` lets its deletion move the Services holding its IPs
/// to other pools instead of waiting for them to go.
pub const FORCE_RELEASE: &str = "ferrolb.io/force-release";

/// Released IPs of a pool kept in its status, newest last.
pub const QUARANTINE_KEPT: usize = 128;

/// Event reasons.
pub mod reasons {
    /// The Service got (new) IPs.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// The Service could not get the IPs it needs; the message says why.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// The Service gave IPs back.
    pub const IP_RELEASED: &str = "IPReleased";
    /// The Service uses a MetalLB spelling of an annotation.
    pub const ALIAS_ANNOTATION: &str = "AliasAnnotation";
    /// The Service's status holds IPs no pool of ours contains, written by someone
    /// else: left alone.
    pub const FOREIGN_IP: &str = "ForeignIP";
    /// A pool being deleted still holds assignments (on the pool).
    pub const POOL_IN_USE: &str = "PoolInUse";
    /// A pool's deletion moves its Services, as its annotation asks (on the pool).
    pub const FORCE_RELEASED: &str = "ForceReleased";
    /// A pool overlaps the cluster's own networks (on the pool).
    pub const CLUSTER_OVERLAP: &str = "ClusterOverlap";
}

/// What the watches show, at one instant.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every Service.
    pub services: Vec<Arc<Service>>,
    /// Every IPAddressPool of this installation.
    pub pools: Vec<Arc<IPAddressPool>>,
    /// Every Namespace.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Every Node (pod CIDRs and addresses).
    pub nodes: Vec<Arc<Node>>,
    /// Every ServiceCIDR.
    pub service_cidrs: Vec<Arc<ServiceCIDR>>,
}

/// A Service whose status or annotation must change.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceWrite {
    /// The Service.
    pub key: ServiceKey,
    /// The resourceVersion the decision was made on.
    pub resource_version: Option<String>,
    /// What it should show.
    pub desired: ServiceView,
    /// Whether `status.loadBalancer.ingress` differs.
    pub status: bool,
    /// Whether the output annotation differs.
    pub annotation: bool,
}

/// A pool whose finalizers must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizerWrite {
    /// The pool.
    pub pool: String,
    /// The resourceVersion the decision was made on.
    pub resource_version: Option<String>,
    /// The whole list to write.
    pub finalizers: Vec<String>,
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The object (a Service or a pool).
    pub reference: ObjectReference,
    /// Warning rather than Normal.
    pub warning: bool,
    /// One of [`reasons`].
    pub reason: &'static str,
    /// The human-readable message.
    pub note: String,
}

/// The result of one allocation decision, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New IPs assigned.
    Assigned,
    /// IPs rebuilt from a Service's status.
    Restored,
    /// IPs given back.
    Released,
    /// The Service could not get what it needs; a stable reason label.
    Failed(&'static str),
}

impl Outcome {
    /// `success` or `failure`.
    pub fn result(self) -> &'static str {
        match self {
            Self::Failed(_) => "failure",
            _ => "success",
        }
    }

    /// A stable label: `assigned`, `restored`, `released` or the failure's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::Restored => "restored",
            Self::Released => "released",
            Self::Failed(reason) => reason,
        }
    }
}

/// Everything one pass decided.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Pool finalizer changes, written before the Services.
    pub finalizers: Vec<FinalizerWrite>,
    /// Service writes, at most two API calls each.
    pub writes: Vec<ServiceWrite>,
    /// Events.
    pub notices: Vec<Notice>,
    /// Allocation outcomes.
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, Default)]
struct PoolRecord {
    /// The last valid version.
    applied: Option<crate::allocator::Pool>,
    /// Why the current spec cannot be used.
    error: Option<PoolSpecError>,
    /// Being deleted (and not forced): kept frozen until its Services let go.
    deleting: bool,
    /// The last pool Event's message, so each is published once.
    noticed: Option<String>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Reconciler {
    class: Option<String>,
    allocator: Allocator,
    pools: BTreeMap<String, PoolRecord>,
    /// The cluster's own networks last applied.
    reserved: Vec<Reserved>,
    /// The last AllocationFailed message per Service, so a failure is reported once.
    failures: HashMap<ServiceKey, String>,
    /// Foreign IPs already reported per Service.
    foreign: HashMap<ServiceKey, Vec<IpAddr>>,
    /// Alias spellings already reported per Service.
    aliases: HashMap<ServiceKey, BTreeSet<String>>,
    /// Our last write per Service: what it set, and the resourceVersions it was
    /// decided on and produced. While the watch shows one of those, the object is
    /// ours-in-flight and is not written again (the status and annotation calls each
    /// produce a version, and the watch may show the first before the second).
    written: HashMap<ServiceKey, (Vec<Option<String>>, ServiceView)>,
    /// What Services held before a pool change took IPs from them, so the pass
    /// reports the release.
    displaced: HashMap<ServiceKey, Allocation>,
    /// Bumped whenever something every Service's decision may depend on changed:
    /// pools, namespace labels, reserved networks, or IPs returning to the pools.
    epoch: u64,
    /// Fingerprint of the namespaces (name, resourceVersion) seen last.
    namespaces: u64,
    /// Services that needed nothing at (resourceVersion, epoch): skipped until one of
    /// the two moves, which keeps a steady pass cheap at thousands of Services.
    settled: HashMap<ServiceKey, (Option<String>, u64)>,
}

impl Reconciler {
    /// A reconciler for Services of `class` (`None`: Services without a class).
    pub fn new(class: Option<String>) -> Self {
        Self {
            class,
            ..Self::default()
        }
    }

    /// The allocator, for inspection.
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// Rebuilds every assignment from the Services' `status.loadBalancer.ingress`,
    /// oldest Service first, then each pool's quarantine from its status, before
    /// anything new is allocated: a restart or a new leader moves no IP and hands a
    /// just-released IP to nobody while never-used ones remain.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Vec<Outcome> {
        self.sync_pools(&snapshot.pools);
        self.sync_reserved(snapshot);
        let labels = namespace_labels(&snapshot.namespaces);
        let mut outcomes = Vec::new();
        for svc in ordered(&snapshot.services) {
            let input = Input::read(svc, self.class.as_deref(), ns_labels_of(&labels, svc));
            if input.handling != Handling::Ours || input.current_ips().is_empty() {
                continue;
            }
            // A Service whose annotations are wrong keeps its IPs all the same.
            let ips = input.current_ips().to_vec();
            let restored = self.allocator.restore(input.restoring(), &ips);
            for e in &restored.rejected {
                tracing::info!(service = %input.key(), error = %e, "IP not restored");
            }
            if restored.allocation.is_some() {
                outcomes.push(Outcome::Restored);
            }
        }
        for object in &snapshot.pools {
            let released = object
                .status
                .as_ref()
                .map(|s| s.released.as_slice())
                .unwrap_or_default();
            let ips: Vec<IpAddr> = released.iter().filter_map(|r| r.ip.parse().ok()).collect();
            if !ips.is_empty() {
                self.allocator.restore_quarantine(&object.name_any(), ips);
            }
        }
        outcomes
    }

    /// Brings every pool and Service in line with the objects in `snapshot`.
    pub fn plan(&mut self, snapshot: &Snapshot) -> Plan {
        let mut changed = self.sync_pools(&snapshot.pools);
        changed |= self.sync_reserved(snapshot);
        let namespaces = fingerprint(&snapshot.namespaces);
        if namespaces != self.namespaces {
            self.namespaces = namespaces;
            changed = true;
        }
        let labels = namespace_labels(&snapshot.namespaces);
        let mut plan = Plan::default();
        let services = ordered(&snapshot.services);
        let seen: BTreeSet<ServiceKey> = services.iter().map(|s| service::key_of(s)).collect();
        // Deleted Services first: their IPs go back to the pools before anyone asks
        // for one. There is nothing to write.
        let gone: Vec<ServiceKey> = self
            .allocator
            .allocations()
            .map(|(k, _)| k.clone())
            .filter(|k| !seen.contains(k))
            .collect();
        for key in gone {
            changed = true;
            self.allocator.release(&key);
            plan.outcomes.push(Outcome::Released);
        }
        if changed {
            self.epoch += 1;
        }
        let released_before = count_released(&plan);
        for svc in services {
            let key = service::key_of(svc);
            let version = svc.resource_version();
            let settled = self.settled.get(&key) == Some(&(version.clone(), self.epoch));
            if settled && !self.failures.contains_key(&key) {
                continue;
            }
            let writes = plan.writes.len();
            self.plan_service(svc, ns_labels_of(&labels, svc), &mut plan);
            if plan.writes.len() == writes && !self.failures.contains_key(&key) {
                self.settled.insert(key, (version, self.epoch));
            } else {
                self.settled.remove(&key);
            }
        }
        // IPs went back to the pools during the pass: Services waiting for one (or
        // for a missing family) are decided again next time.
        if count_released(&plan) > released_before {
            self.epoch += 1;
        }
        self.plan_pools(&snapshot.pools, &mut plan);
        self.settled.retain(|k, _| seen.contains(k));
        self.displaced.clear();
        self.failures.retain(|k, _| seen.contains(k));
        self.foreign.retain(|k, _| seen.contains(k));
        self.aliases.retain(|k, _| seen.contains(k));
        self.written.retain(|k, _| seen.contains(k));
        plan
    }

    fn plan_service(
        &mut self,
        svc: &Service,
        ns_labels: &BTreeMap<String, String>,
        plan: &mut Plan,
    ) {
        let input = Input::read(svc, self.class.as_deref(), ns_labels);
        let key = input.key().clone();
        let reference = svc.object_ref(&());
        let before = self
            .displaced
            .remove(&key)
            .or_else(|| self.allocator.allocation(&key).cloned());
        let current = ServiceView::current(&input);
        let desired = match input.handling {
            Handling::Ours => {
                if before.is_none() && self.foreign_ips(&input, &reference, plan) {
                    return;
                }
                match &input.request {
                    Err(e) => {
                        // No change: keep (and protect) what it holds, say what is wrong.
                        if before.is_none() && !current.ips.is_empty() {
                            self.allocator.restore(&input.base, &current.ips);
                        }
                        self.fail(&key, reference, e.to_string(), "invalid_request", plan);
                        return;
                    }
                    Ok(t) => {
                        let seen = self.aliases.entry(key.clone()).or_default();
                        for alias in &t.aliases {
                            if seen.insert(alias.alias.clone()) {
                                plan.notices.push(Notice {
                                    reference: reference.clone(),
                                    warning: false,
                                    reason: reasons::ALIAS_ANNOTATION,
                                    note: alias.message(),
                                });
                            }
                        }
                        let result = self.allocator.assign(&t.request);
                        let after = self.allocator.allocation(&key).cloned();
                        released(before.as_ref(), after.as_ref(), &reference, plan);
                        match result {
                            Ok(a) => {
                                self.failures.remove(&key);
                                if before.as_ref() != Some(&a) {
                                    plan.notices.push(Notice {
                                        reference: reference.clone(),
                                        warning: false,
                                        reason: reasons::IP_ALLOCATED,
                                        note: allocated_note(&a),
                                    });
                                    plan.outcomes.push(Outcome::Assigned);
                                }
                            }
                            Err(e) => {
                                self.fail(&key, reference, e.to_string(), e.reason(), plan);
                            }
                        }
                        ServiceView::of(after.as_ref())
                    }
                }
            }
            handling => {
                self.failures.remove(&key);
                if before.is_some() {
                    self.allocator.release(&key);
                    released(before.as_ref(), None, &reference, plan);
                }
                // Another class's Service belongs to another controller (possibly a
                // second FerroLB with its own class, which writes the same
                // annotation): hands off unless we held its IPs. A Service that
                // stopped being a LoadBalancer loses what was written for it.
                if handling == Handling::OtherClass && before.is_none() {
                    return;
                }
                ServiceView::default()
            }
        };
        let status =
            desired.ips != current.ips || (!input.exact_ingress && !desired.ips.is_empty());
        let annotation = desired.pool != current.pool;
        if !status && !annotation {
            self.written.remove(&key);
            return;
        }
        let resource_version = svc.resource_version();
        if self.written.get(&key).is_some_and(|(versions, view)| {
            *view == desired && versions.contains(&resource_version)
        }) {
            return;
        }
        plan.writes.push(ServiceWrite {
            key,
            resource_version,
            desired,
            status,
            annotation,
        });
    }

    /// A Service of ours we hold nothing for, whose status shows IPs that no pool of
    /// ours contains and without our output annotation, got them from someone else
    /// (another controller, or MetalLB before a migration). It is not adopted (its IPs
    /// are not ours to announce) and not overwritten (that would move a working IP
    /// without being asked): an Event says so, once, and how to resolve it. True when
    /// the Service is foreign and must be left alone.
    fn foreign_ips(&mut self, input: &Input, reference: &ObjectReference, plan: &mut Plan) -> bool {
        if input.current_pool().is_some() || input.current_ips().is_empty() {
            self.foreign.remove(input.key());
            return false;
        }
        let outside: Vec<IpAddr> = input
            .current_ips()
            .iter()
            .copied()
            .filter(|ip| {
                !self
                    .pools
                    .values()
                    .filter_map(|r| r.applied.as_ref())
                    .any(|p| p.offers(*ip))
            })
            .collect();
        if outside.is_empty() {
            self.foreign.remove(input.key());
            return false;
        }
        if self.foreign.get(input.key()) != Some(&outside) {
            let listed: Vec<String> = outside.iter().map(ToString::to_string).collect();
            plan.notices.push(Notice {
                reference: reference.clone(),
                warning: true,
                reason: reasons::FOREIGN_IP,
                note: format!(
                    "status.loadBalancer.ingress holds {}, which no IPAddressPool of this installation contains and which FerroLB did not assign; FerroLB leaves this Service alone and does not announce it. Add a pool containing it to adopt it, or clear the status to get a new IP",
                    listed.join(", ")
                ),
            });
            self.foreign.insert(input.key().clone(), outside);
        }
        true
    }

    fn fail(
        &mut self,
        key: &ServiceKey,
        reference: ObjectReference,
        note: String,
        reason: &'static str,
        plan: &mut Plan,
    ) {
        if self.failures.get(key) == Some(&note) {
            return;
        }
        self.failures.insert(key.clone(), note.clone());
        plan.notices.push(Notice {
            reference,
            warning: true,
            reason: reasons::ALLOCATION_FAILED,
            note,
        });
        plan.outcomes.push(Outcome::Failed(reason));
    }

    /// Records a successful write and the resourceVersions its calls produced, so
    /// the next pass does not repeat it before the watch shows all of it.
    pub fn written(&mut self, write: &ServiceWrite, produced: Vec<String>) {
        let mut versions = vec![write.resource_version.clone()];
        versions.extend(produced.into_iter().map(Some));
        self.written
            .insert(write.key.clone(), (versions, write.desired.clone()));
    }

    /// Applies pool objects to the allocator: new and changed valid pools are upserted,
    /// deleted ones removed. An invalid spec keeps the last valid version (so Services
    /// keep their IPs) and freezes it; a pool being deleted is frozen and kept while
    /// Services hold its IPs, unless its [`FORCE_RELEASE`] annotation asks to move
    /// them.
    fn sync_pools(&mut self, objects: &[Arc<IPAddressPool>]) -> bool {
        let mut changed = false;
        let mut present = BTreeSet::new();
        for object in objects {
            let name = object.name_any();
            let deleting = object.metadata.deletion_timestamp.is_some();
            if deleting && forced(object) {
                // Handled as gone: its Services move now.
                continue;
            }
            present.insert(name.clone());
            let record = self.pools.entry(name.clone()).or_default();
            record.deleting = deleting;
            match pool::translate(object) {
                Ok(p) => {
                    record.error = None;
                    if record.applied.as_ref() != Some(&p) {
                        changed = true;
                        record.applied = Some(p.clone());
                        let held = held_from(&self.allocator, &name);
                        let affected = self.allocator.upsert_pool(p);
                        self.remember_displaced(held, affected);
                    }
                }
                Err(e) => {
                    if record.error.as_ref() != Some(&e) {
                        tracing::warn!(pool = %name, error = %e, "IPAddressPool is invalid");
                    }
                    record.error = Some(e);
                }
            }
            let Some(record) = self.pools.get(&name) else {
                continue;
            };
            // Services keep what they hold, but a frozen pool takes no new allocations.
            let freeze = if record.deleting {
                Some(FreezeReason::Deleting)
            } else if record.error.is_some() {
                Some(FreezeReason::Invalid)
            } else {
                None
            };
            if record.applied.is_some() && self.allocator.frozen(&name) != freeze {
                self.allocator.set_frozen(&name, freeze);
                changed = true;
            }
        }
        let gone: Vec<String> = self
            .pools
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            changed = true;
            self.pools.remove(&name);
            let held = held_from(&self.allocator, &name);
            let affected = self.allocator.remove_pool(&name);
            self.remember_displaced(held, affected);
        }
        changed
    }

    /// Applies the cluster's own networks; true when they changed.
    fn sync_reserved(&mut self, snapshot: &Snapshot) -> bool {
        let reserved = cluster::reserved(&snapshot.nodes, &snapshot.service_cidrs);
        if reserved == self.reserved {
            return false;
        }
        self.allocator.set_reserved(
            reserved
                .iter()
                .map(|r| (r.label.clone(), r.range))
                .collect(),
        );
        self.reserved = reserved;
        true
    }

    /// Finalizers and Events of the pools: the finalizer stays while a pool holds
    /// assignments; a pool being deleted says who still uses it.
    fn plan_pools(&mut self, objects: &[Arc<IPAddressPool>], plan: &mut Plan) {
        let mut holders: HashMap<&str, Vec<&ServiceKey>> = HashMap::new();
        let deleting: BTreeSet<String> = objects
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_some())
            .map(|o| o.name_any())
            .collect();
        if !deleting.is_empty() {
            for (key, a) in self.allocator.allocations() {
                if deleting.contains(&a.pool) {
                    holders.entry(a.pool.as_str()).or_default().push(key);
                }
            }
        }
        for object in objects {
            let name = object.name_any();
            let has = object.finalizers().iter().any(|f| f == POOL_FINALIZER);
            let holds = if deleting.contains(&name) {
                holders.get(name.as_str()).is_some_and(|h| !h.is_empty())
            } else {
                [Family::V4, Family::V6]
                    .iter()
                    .filter_map(|f| self.allocator.usage(&name, *f))
                    .any(|u| u.assigned > 0)
            };
            if has != holds {
                let mut finalizers: Vec<String> = object
                    .finalizers()
                    .iter()
                    .filter(|f| *f != POOL_FINALIZER)
                    .cloned()
                    .collect();
                if holds {
                    finalizers.push(POOL_FINALIZER.to_owned());
                }
                plan.finalizers.push(FinalizerWrite {
                    pool: name.clone(),
                    resource_version: object.resource_version(),
                    finalizers,
                });
            }
            let notice = self.pool_notice(object, holders.get(name.as_str()));
            if let Some(record) = self.pools.get_mut(&name) {
                if record.noticed.as_ref() != notice.as_ref().map(|n| &n.note) {
                    record.noticed = notice.as_ref().map(|n| n.note.clone());
                    plan.notices.extend(notice);
                }
            } else if let Some(n) = notice {
                // A forced pool is no longer recorded: its Event goes out once, as
                // its finalizer is removed.
                if has {
                    plan.notices.push(n);
                }
            }
        }
    }

    /// The Event a pool deserves now, if any.
    fn pool_notice(
        &self,
        object: &IPAddressPool,
        holders: Option<&Vec<&ServiceKey>>,
    ) -> Option<Notice> {
        let name = object.name_any();
        let reference = object.object_ref(&());
        if object.metadata.deletion_timestamp.is_some() {
            if forced(object) {
                return Some(Notice {
                    reference,
                    warning: false,
                    reason: reasons::FORCE_RELEASED,
                    note: format!(
                        "IPAddressPool {name:?} is deleted with {FORCE_RELEASE}=true: the Services holding its IPs get new ones from other pools"
                    ),
                });
            }
            let holders = holders.filter(|h| !h.is_empty())?;
            return Some(Notice {
                reference,
                warning: true,
                reason: reasons::POOL_IN_USE,
                note: in_use_message(&name, holders),
            });
        }
        let overlaps = self.allocator.reserved_overlaps(&name);
        if overlaps.is_empty() {
            return None;
        }
        Some(Notice {
            reference,
            warning: true,
            reason: reasons::CLUSTER_OVERLAP,
            note: cluster_overlap_message(&overlaps),
        })
    }

    fn remember_displaced(
        &mut self,
        mut held: HashMap<ServiceKey, Allocation>,
        affected: Vec<ServiceKey>,
    ) {
        for key in affected {
            if let Some(a) = held.remove(&key) {
                self.displaced.entry(key).or_insert(a);
            }
        }
    }

    /// What each pool's status should say, by pool name.
    pub fn pool_reports(&self, objects: &[Arc<IPAddressPool>]) -> Vec<(String, PoolReport)> {
        objects
            .iter()
            .map(|object| {
                let name = object.name_any();
                let record = self.pools.get(&name);
                let state = if object.metadata.deletion_timestamp.is_some() {
                    let users: Vec<String> = self
                        .allocator
                        .allocations()
                        .filter(|(_, a)| a.pool == name)
                        .map(|(k, _)| k.to_string())
                        .collect();
                    PoolState::Deleting { users }
                } else {
                    match (
                        record.and_then(|r| r.error.as_ref()),
                        self.allocator.pool_health(&name),
                    ) {
                        (Some(e), _) => PoolState::Invalid {
                            reason: e.reason().to_owned(),
                            message: e.to_string(),
                        },
                        (None, Some(PoolHealth::Overlapping { with })) => PoolState::Overlapping(
                            with.iter()
                                .map(|(other, range)| (other.clone(), range.to_string()))
                                .collect(),
                        ),
                        (None, _) => PoolState::Ready,
                    }
                };
                let usage = record
                    .and_then(|r| r.applied.as_ref())
                    .map(|p| {
                        [Family::V4, Family::V6]
                            .into_iter()
                            .filter(|f| p.addresses.has_family(*f))
                            .filter_map(|f| self.allocator.usage(&name, f).map(|u| (f, u)))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut quarantine = self.allocator.quarantine(&name);
                let cut = quarantine.len().saturating_sub(QUARANTINE_KEPT);
                quarantine.drain(..cut);
                let report = PoolReport {
                    generation: object.metadata.generation,
                    usage,
                    state,
                    cluster_overlaps: self
                        .allocator
                        .reserved_overlaps(&name)
                        .into_iter()
                        .map(|(label, range)| (label, range.to_string()))
                        .collect(),
                    quarantine,
                };
                (name, report)
            })
            .collect()
    }
}

/// Whether a pool's deletion may move its Services.
fn forced(object: &IPAddressPool) -> bool {
    object
        .annotations()
        .get(FORCE_RELEASE)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Says who still uses a pool being deleted, and how to let it go.
pub fn in_use_message(name: &str, holders: &[&ServiceKey]) -> String {
    const LISTED: usize = 10;
    let mut listed: Vec<String> = holders
        .iter()
        .take(LISTED)
        .map(ToString::to_string)
        .collect();
    if holders.len() > LISTED {
        listed.push(format!("and {} more", holders.len() - LISTED));
    }
    format!(
        "IPAddressPool {name:?} is being deleted but {} Service(s) still hold its IPs: {}; it takes no new allocations and stays until they are deleted or moved. To move them to other pools now, annotate the pool {FORCE_RELEASE}=true",
        holders.len(),
        listed.join(", ")
    )
}

fn cluster_overlap_message(overlaps: &[(String, ferrolb_address::IpRange)]) -> String {
    let listed: Vec<String> = overlaps
        .iter()
        .map(|(label, range)| format!("{label} ({range})"))
        .collect();
    format!(
        "shares addresses with the cluster's own networks: {}; those addresses are never allocated, the rest of the pool keeps working. Remove them from the pool",
        listed.join(", ")
    )
}

fn released(
    before: Option<&Allocation>,
    after: Option<&Allocation>,
    reference: &ObjectReference,
    plan: &mut Plan,
) {
    let Some(before) = before else {
        return;
    };
    let lost: Vec<String> = before
        .ips
        .iter()
        .filter(|ip| after.is_none_or(|a| !a.ips.contains(ip)))
        .map(ToString::to_string)
        .collect();
    if lost.is_empty() {
        return;
    }
    plan.notices.push(Notice {
        reference: reference.clone(),
        warning: false,
        reason: reasons::IP_RELEASED,
        note: format!(
            "released {} (IPAddressPool {:?})",
            lost.join(", "),
            before.pool
        ),
    });
    plan.outcomes.push(Outcome::Released);
}

/// The allocations drawn from pool `name`, before a change to it.
fn held_from(allocator: &Allocator, name: &str) -> HashMap<ServiceKey, Allocation> {
    allocator
        .allocations()
        .filter(|(_, a)| a.pool == name)
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect()
}

fn allocated_note(a: &Allocation) -> String {
    let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
    format!(
        "assigned {} from IPAddressPool {:?}",
        ips.join(", "),
        a.pool
    )
}

/// Services oldest first (then by key), the documented order for restoring: when two
/// statuses claim one IP that may not be shared, the older Service keeps it.
fn ordered(services: &[Arc<Service>]) -> Vec<&Service> {
    let mut list: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
    list.sort_by_cached_key(|s| {
        (
            s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            s.metadata.namespace.clone(),
            s.metadata.name.clone(),
        )
    });
    list
}

fn count_released(plan: &Plan) -> usize {
    plan.outcomes
        .iter()
        .filter(|o| **o == Outcome::Released)
        .count()
}

/// A fingerprint of the namespaces' names and resourceVersions: any label change
/// changes it.
fn fingerprint(namespaces: &[Arc<Namespace>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut versions: Vec<(String, Option<String>)> = namespaces
        .iter()
        .map(|n| (n.name_any(), n.resource_version()))
        .collect();
    versions.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    versions.hash(&mut h);
    h.finish()
}

fn namespace_labels(namespaces: &[Arc<Namespace>]) -> HashMap<String, BTreeMap<String, String>> {
    namespaces
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect()
}

fn ns_labels_of<'a>(
    labels: &'a HashMap<String, BTreeMap<String, String>>,
    svc: &Service,
) -> &'a BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    svc.metadata
        .namespace
        .as_ref()
        .and_then(|ns| labels.get(ns))
        .unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, extra: serde_json::Value) -> Arc<Service> {
        let v = json!({
            "metadata": { "namespace": "web", "name": name, "resourceVersion": "1",
                          "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", name.len()) },
            "spec": { "type": "LoadBalancer", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                      "ports": [{ "port": 80, "protocol": "TCP" }] },
        });
        Arc::new(serde_json::from_value(merged(v, extra)).unwrap())
    }

    /// `v` with the top-level fields of `extra`, objects merged one level deep.
    fn merged(mut v: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        if let (Some(a), serde_json::Value::Object(b)) = (v.as_object_mut(), extra) {
            for (k, val) in b {
                match (a.get_mut(&k), val) {
                    (Some(serde_json::Value::Object(x)), serde_json::Value::Object(y)) => {
                        x.extend(y);
                    }
                    (_, val) => {
                        a.insert(k, val);
                    }
                }
            }
        }
        v
    }

    fn pool(name: &str, addresses: &[&str]) -> Arc<IPAddressPool> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": { "name": name, "generation": 1 },
                "spec": { "addresses": addresses },
            }))
            .unwrap(),
        )
    }

    fn with_status(s: &Service, ips: &[&str], pool: &str) -> Arc<Service> {
        let mut s = s.clone();
        let ingress: Vec<serde_json::Value> = ips
            .iter()
            .map(|ip| json!({ "ip": ip, "ipMode": "VIP" }))
            .collect();
        s.status =
            serde_json::from_value(json!({ "loadBalancer": { "ingress": ingress } })).unwrap();
        s.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("ferrolb.io/ip-allocated-from-pool".into(), pool.into());
        s.metadata.resource_version = Some("2".into());
        Arc::new(s)
    }

    #[test]
    fn new_service_gets_one_write_and_one_event_then_nothing() {
        let mut r = Reconciler::new(None);
        let mut snap = Snapshot {
            services: vec![svc("a", json!({}))],
            pools: vec![pool("p", &["198.18.0.10-198.18.0.11"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        let plan = r.plan(&snap);
        assert_eq!(plan.writes.len(), 1);
        let w = &plan.writes[0];
        assert!(w.status && w.annotation);
        assert_eq!(
            w.desired.ips,
            vec!["198.18.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(plan.notices.len(), 1);
        assert_eq!(plan.notices[0].reason, reasons::IP_ALLOCATED);
        r.written(w, vec!["2".into(), "3".into()]);
        // The watch has not shown the write yet: nothing is repeated.
        assert!(r.plan(&snap).writes.is_empty());
        // The watch shows the status call's version, not yet the annotation's.
        let mut halfway = (*with_status(&snap.services[0], &["198.18.0.10"], "p")).clone();
        halfway.metadata.annotations = None;
        snap.services = vec![Arc::new(halfway)];
        assert!(r.plan(&snap).writes.is_empty(), "no third write");
        snap.services = vec![with_status(&snap.services[0], &["198.18.0.10"], "p")];
        let again = r.plan(&snap);
        assert!(again.writes.is_empty() && again.notices.is_empty());
    }

    #[test]
    fn restore_keeps_every_ip_even_when_the_order_of_creation_would_differ() {
        let pools = vec![pool("p", &["198.18.0.10-198.18.0.12"])];
        let services = vec![
            with_status(&svc("a", json!({})), &["198.18.0.12"], "p"),
            with_status(&svc("bb", json!({})), &["198.18.0.10"], "p"),
        ];
        let snap = Snapshot {
            services,
            pools,
            namespaces: vec![],
            ..Snapshot::default()
        };
        let mut r = Reconciler::new(None);
        assert_eq!(r.restore(&snap).len(), 2);
        let plan = r.plan(&snap);
        assert!(plan.writes.is_empty(), "{:?}", plan.writes);
        assert!(plan.notices.is_empty(), "{:?}", plan.notices);
    }

    #[test]
    fn exhaustion_reports_once_then_allocates_when_an_ip_frees() {
        let mut r = Reconciler::new(None);
        let a = with_status(&svc("a", json!({})), &["198.18.0.10"], "p");
        let mut snap = Snapshot {
            services: vec![a, svc("bb", json!({}))],
            pools: vec![pool("p", &["198.18.0.10"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        r.restore(&snap);
        let plan = r.plan(&snap);
        assert!(plan.writes.is_empty());
        assert_eq!(plan.notices.len(), 1);
        assert_eq!(plan.notices[0].reason, reasons::ALLOCATION_FAILED);
        assert!(
            plan.notices[0].note.contains("no free IPv4"),
            "{}",
            plan.notices[0].note
        );
        assert!(r.plan(&snap).notices.is_empty(), "reported once");
        snap.services.remove(0);
        let plan = r.plan(&snap);
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(plan.writes[0].key.name, "bb");
    }

    #[test]
    fn conflicting_annotations_change_nothing_and_say_why() {
        let mut r = Reconciler::new(None);
        let s = svc(
            "a",
            json!({ "metadata": { "annotations": {
                "ferrolb.io/address-pool": "p", "metallb.io/address-pool": "q" } } }),
        );
        let snap = Snapshot {
            services: vec![with_status(&s, &["198.18.0.11"], "p")],
            pools: vec![pool("p", &["198.18.0.10-198.18.0.11"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        let plan = r.plan(&snap);
        assert!(plan.writes.is_empty());
        assert_eq!(plan.notices[0].reason, reasons::ALLOCATION_FAILED);
        assert!(plan.notices[0].note.contains("metallb.io/address-pool"));
        // Its IP stays reserved.
        assert_eq!(
            r.allocator().holders("198.18.0.11".parse().unwrap()).len(),
            1
        );
    }

    #[test]
    fn alias_annotation_is_reported_once() {
        let mut r = Reconciler::new(None);
        let snap = Snapshot {
            services: vec![svc(
                "a",
                json!({ "metadata": { "annotations": { "metallb.universe.tf/address-pool": "p" } } }),
            )],
            pools: vec![pool("p", &["198.18.0.10"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        let reasons: Vec<&str> = r.plan(&snap).notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, [reasons::ALIAS_ANNOTATION, reasons::IP_ALLOCATED]);
        assert!(
            r.plan(&snap)
                .notices
                .iter()
                .all(|n| n.reason != reasons::ALIAS_ANNOTATION)
        );
    }

    #[test]
    fn service_that_stops_being_a_load_balancer_is_cleared() {
        let mut r = Reconciler::new(None);
        let held = with_status(&svc("a", json!({})), &["198.18.0.10"], "p");
        let mut snap = Snapshot {
            services: vec![held.clone()],
            pools: vec![pool("p", &["198.18.0.10"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        r.restore(&snap);
        let mut cluster_ip = (*held).clone();
        if let Some(spec) = cluster_ip.spec.as_mut() {
            spec.type_ = Some("ClusterIP".into());
        }
        snap.services = vec![Arc::new(cluster_ip)];
        let plan = r.plan(&snap);
        assert_eq!(plan.writes.len(), 1);
        assert!(plan.writes[0].desired.ips.is_empty() && plan.writes[0].desired.pool.is_none());
        assert_eq!(plan.notices[0].reason, reasons::IP_RELEASED);
    }

    #[test]
    fn other_class_is_left_alone() {
        let mut r = Reconciler::new(None);
        let s = svc(
            "a",
            json!({ "spec": { "loadBalancerClass": "other.io/lb" } }),
        );
        let snap = Snapshot {
            services: vec![with_status(&s, &["203.0.113.5"], "x")],
            pools: vec![pool("p", &["198.18.0.10"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        let plan = r.plan(&snap);
        // Its status and annotation are another controller's.
        assert!(plan.writes.is_empty() && plan.notices.is_empty());
    }

    #[test]
    fn shrinking_a_pool_moves_only_services_outside_it() {
        let mut r = Reconciler::new(None);
        let a = with_status(&svc("a", json!({})), &["198.18.0.10"], "p");
        let b = with_status(&svc("bb", json!({})), &["198.18.0.13"], "p");
        let mut snap = Snapshot {
            services: vec![a, b],
            pools: vec![pool("p", &["198.18.0.10-198.18.0.13"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        r.restore(&snap);
        assert!(r.plan(&snap).writes.is_empty());
        snap.pools = vec![pool("p", &["198.18.0.10-198.18.0.11"])];
        let plan = r.plan(&snap);
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(plan.writes[0].key.name, "bb");
        let reasons: Vec<&str> = plan.notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, [reasons::IP_RELEASED, reasons::IP_ALLOCATED]);
        assert_eq!(
            plan.writes[0].desired.ips,
            vec!["198.18.0.11".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    /// The cost of one pass, which every change triggers: run with
    /// `cargo test --release -p ferrolb-controller full_pass -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement"]
    fn full_pass_over_10k_services() {
        let services: Vec<Arc<Service>> = (0..10_000)
            .map(|i| svc(&format!("s{i:05}"), json!({})))
            .collect();
        let snap = Snapshot {
            services,
            pools: vec![pool("p", &["198.18.0.0/16"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        let mut r = Reconciler::new(None);
        let start = std::time::Instant::now();
        let first = r.plan(&snap);
        let allocate = start.elapsed();
        assert_eq!(first.writes.len(), 10_000);
        for w in &first.writes {
            r.written(w, Vec::new());
        }
        let start = std::time::Instant::now();
        let check = r.plan(&snap);
        let recheck = start.elapsed();
        assert!(check.writes.is_empty());
        let start = std::time::Instant::now();
        let steady = r.plan(&snap);
        let again = start.elapsed();
        assert!(steady.writes.is_empty());
        println!(
            "first pass (10k allocations): {allocate:?}; pass re-deciding every Service: {recheck:?}; steady pass: {again:?}"
        );
    }

    #[test]
    fn invalid_pool_keeps_holders_but_allocates_nothing_new() {
        let mut r = Reconciler::new(None);
        let ask = json!({ "metadata": { "annotations": { "ferrolb.io/address-pool": "p" } } });
        let held = with_status(&svc("a", ask.clone()), &["198.18.0.10"], "p");
        let mut snap = Snapshot {
            services: vec![held.clone()],
            pools: vec![pool("p", &["198.18.0.10-198.18.0.20"])],
            namespaces: vec![],
            ..Snapshot::default()
        };
        r.restore(&snap);
        assert!(r.plan(&snap).writes.is_empty());
        snap.pools = vec![pool("p", &["198.18.0.10-198.18.0.20", "198.18.0.5/24"])];
        snap.services = vec![held, svc("bb", ask.clone()), svc("ccc", json!({}))];
        let plan = r.plan(&snap);
        assert!(plan.writes.is_empty(), "{:?}", plan.writes);
        let notes: Vec<&str> = plan.notices.iter().map(|n| n.note.as_str()).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("\"p\" takes no new allocations") && notes[0].contains("invalid"),
            "{notes:?}"
        );
        // The pool's status says what is wrong with it.
        let reports = r.pool_reports(&snap.pools);
        assert!(
            matches!(&reports[0].1.state, PoolState::Invalid { message, .. } if message.contains("198.18.0.5/24")),
            "{:?}",
            reports[0].1.state
        );
        assert_eq!(reports[0].1.usage[0].1.assigned, 1);
        // Fixed: allocations resume.
        snap.pools = vec![pool("p", &["198.18.0.10-198.18.0.20"])];
        let plan = r.plan(&snap);
        assert_eq!(plan.writes.len(), 2, "{:?}", plan.writes);
    }

    #[test]
    fn pool_reports_follow_overlaps_and_counts() {
        let mut r = Reconciler::new(None);
        let snap = Snapshot {
            services: vec![svc("a", json!({}))],
            pools: vec![
                pool("p", &["198.18.0.10-198.18.0.13"]),
                pool("q", &["198.18.0.13-198.18.0.20"]),
            ],
            namespaces: vec![],
            ..Snapshot::default()
        };
        r.plan(&snap);
        let reports = r.pool_reports(&snap.pools);
        assert!(matches!(reports[0].1.state, PoolState::Overlapping(ref w) if w[0].0 == "q"));
        assert_eq!(reports[0].1.usage[0].1.total, 4);
    }

    /// A pool object with extra metadata (and status) merged in.
    fn pool_with(name: &str, addresses: &[&str], extra: serde_json::Value) -> Arc<IPAddressPool> {
        let v = merged(
            serde_json::to_value(&*pool(name, addresses)).unwrap(),
            extra,
        );
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn ips(plan: &Plan, name: &str) -> Option<Vec<IpAddr>> {
        plan.writes
            .iter()
            .find(|w| w.key.name == name)
            .map(|w| w.desired.ips.clone())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_pool_in_use_gets_the_finalizer_and_loses_it_when_empty() {
        let mut r = Reconciler::new(None);
        let mut snap = Snapshot {
            services: vec![svc("a", json!({}))],
            pools: vec![pool("p", &["198.18.0.10-198.18.0.11"])],
            ..Snapshot::default()
        };
        let plan = r.plan(&snap);
        assert_eq!(plan.finalizers.len(), 1);
        assert_eq!(
            plan.finalizers[0].finalizers,
            vec![POOL_FINALIZER.to_owned()]
        );
        snap.pools = vec![pool_with(
            "p",
            &["198.18.0.10-198.18.0.11"],
            json!({ "metadata": { "finalizers": [POOL_FINALIZER, "other.io/keep"] } }),
        )];
        assert!(r.plan(&snap).finalizers.is_empty(), "already there");
        snap.services.clear();
        let plan = r.plan(&snap);
        assert_eq!(
            plan.finalizers[0].finalizers,
            vec!["other.io/keep".to_owned()],
            "only ours is removed"
        );
    }

    #[test]
    fn a_deleted_pool_keeps_its_holders_takes_nothing_new_and_says_who_holds_it() {
        let mut r = Reconciler::new(None);
        let held = with_status(&svc("a", json!({})), &["198.18.0.10"], "p");
        let deleting = json!({ "metadata": {
            "finalizers": [POOL_FINALIZER],
            "deletionTimestamp": "2026-01-01T00:00:00Z" } });
        let mut snap = Snapshot {
            services: vec![held.clone(), svc("bb", json!({}))],
            pools: vec![
                pool_with("p", &["198.18.0.10-198.18.0.13"], deleting.clone()),
                pool("q", &["198.18.0.20"]),
            ],
            ..Snapshot::default()
        };
        r.restore(&snap);
        let plan = r.plan(&snap);
        assert_eq!(
            ips(&plan, "bb"),
            Some(vec![ip("198.18.0.20")]),
            "not from the deleted pool"
        );
        assert!(ips(&plan, "a").is_none(), "the holder keeps its IP");
        assert!(
            plan.finalizers.iter().all(|f| f.pool != "p"),
            "the finalizer stays while a holds p"
        );
        let in_use: Vec<&Notice> = plan
            .notices
            .iter()
            .filter(|n| n.reason == reasons::POOL_IN_USE)
            .collect();
        assert_eq!(in_use.len(), 1);
        assert!(in_use[0].note.contains("web/a") && in_use[0].note.contains(FORCE_RELEASE));
        let reports = r.pool_reports(&snap.pools);
        assert!(
            matches!(&reports[0].1.state, PoolState::Deleting { users } if users == &["web/a"])
        );
        // The last holder goes: the finalizer goes with it.
        snap.services = vec![svc("bb", json!({}))];
        let plan = r.plan(&snap);
        assert!(
            plan.finalizers
                .iter()
                .any(|f| f.pool == "p" && f.finalizers.is_empty())
        );
    }

    #[test]
    fn forcing_a_deleted_pool_moves_its_holders_and_drops_the_finalizer() {
        let mut r = Reconciler::new(None);
        let held = with_status(&svc("a", json!({})), &["198.18.0.10"], "p");
        let forced = json!({ "metadata": {
            "finalizers": [POOL_FINALIZER],
            "annotations": { FORCE_RELEASE: "true" },
            "deletionTimestamp": "2026-01-01T00:00:00Z" } });
        let mut snap = Snapshot {
            services: vec![held],
            pools: vec![pool("p", &["198.18.0.10"]), pool("q", &["198.18.0.20"])],
            ..Snapshot::default()
        };
        r.restore(&snap);
        assert!(r.plan(&snap).writes.is_empty());
        snap.pools[0] = pool_with("p", &["198.18.0.10"], forced);
        let plan = r.plan(&snap);
        assert_eq!(ips(&plan, "a"), Some(vec![ip("198.18.0.20")]));
        assert!(
            plan.finalizers
                .iter()
                .any(|f| f.pool == "p" && f.finalizers.is_empty())
        );
        let reasons: Vec<&str> = plan.notices.iter().map(|n| n.reason).collect();
        assert!(reasons.contains(&reasons::FORCE_RELEASED), "{reasons:?}");
        assert!(reasons.contains(&reasons::IP_RELEASED), "{reasons:?}");
    }

    #[test]
    fn a_foreign_ip_is_reported_once_and_left_alone_until_a_pool_contains_it() {
        let mut r = Reconciler::new(None);
        let mut theirs = (*svc("a", json!({}))).clone();
        theirs.status = serde_json::from_value(
            json!({ "loadBalancer": { "ingress": [{ "ip": "203.0.113.7", "ipMode": "VIP" }] } }),
        )
        .unwrap();
        let mut snap = Snapshot {
            services: vec![Arc::new(theirs)],
            pools: vec![pool("p", &["198.18.0.10"])],
            ..Snapshot::default()
        };
        r.restore(&snap);
        let plan = r.plan(&snap);
        assert!(plan.writes.is_empty(), "not overwritten: {:?}", plan.writes);
        assert_eq!(plan.notices.len(), 1);
        assert_eq!(plan.notices[0].reason, reasons::FOREIGN_IP);
        assert!(plan.notices[0].note.contains("203.0.113.7"));
        assert!(r.plan(&snap).notices.is_empty(), "reported once");
        assert_eq!(
            r.allocator().holders(ip("198.18.0.10")).len(),
            0,
            "nothing held for it"
        );
        // A pool containing it adopts it: kept, annotated.
        snap.pools.push(pool("adopt", &["203.0.113.0/29"]));
        let plan = r.plan(&snap);
        assert_eq!(plan.writes.len(), 1);
        assert!(!plan.writes[0].status, "the IP stays");
        assert_eq!(plan.writes[0].desired.pool.as_deref(), Some("adopt"));
    }

    #[test]
    fn our_own_ip_outside_every_pool_is_replaced_not_called_foreign() {
        // It carries our annotation: we wrote it, and its pool is gone.
        let mut r = Reconciler::new(None);
        let snap = Snapshot {
            services: vec![with_status(&svc("a", json!({})), &["203.0.113.7"], "gone")],
            pools: vec![pool("p", &["198.18.0.10"])],
            ..Snapshot::default()
        };
        r.restore(&snap);
        let plan = r.plan(&snap);
        assert_eq!(ips(&plan, "a"), Some(vec![ip("198.18.0.10")]));
        assert!(plan.notices.iter().all(|n| n.reason != reasons::FOREIGN_IP));
    }

    #[test]
    fn restore_puts_the_quarantine_from_the_pool_status_behind_never_used_addresses() {
        let released = json!({ "status": { "released": [
            { "ip": "198.18.0.10", "releasedAt": "2026-01-01T00:00:00Z" } ] } });
        let snap = Snapshot {
            services: vec![svc("a", json!({}))],
            pools: vec![pool_with("p", &["198.18.0.10-198.18.0.11"], released)],
            ..Snapshot::default()
        };
        let mut r = Reconciler::new(None);
        r.restore(&snap);
        let plan = r.plan(&snap);
        assert_eq!(ips(&plan, "a"), Some(vec![ip("198.18.0.11")]));
        let reports = r.pool_reports(&snap.pools);
        assert_eq!(reports[0].1.quarantine, vec![ip("198.18.0.10")]);
        // Without the status, the lowest address would go first.
        let mut fresh = Reconciler::new(None);
        let bare = Snapshot {
            pools: vec![pool("p", &["198.18.0.10-198.18.0.11"])],
            ..snap
        };
        fresh.restore(&bare);
        assert_eq!(ips(&fresh.plan(&bare), "a"), Some(vec![ip("198.18.0.10")]));
    }

    #[test]
    fn the_clusters_own_addresses_are_never_allocated_and_the_pool_says_so() {
        let node: Arc<Node> = Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": "node1" },
                "spec": { "podCIDRs": ["198.18.0.8/30"] },
                "status": { "addresses": [{ "type": "InternalIP", "address": "198.18.0.12" }] },
            }))
            .unwrap(),
        );
        let snap = Snapshot {
            services: vec![svc("a", json!({})), svc("bb", json!({}))],
            pools: vec![pool("p", &["198.18.0.10-198.18.0.13"])],
            nodes: vec![node],
            ..Snapshot::default()
        };
        let mut r = Reconciler::new(None);
        let plan = r.plan(&snap);
        assert_eq!(ips(&plan, "a"), Some(vec![ip("198.18.0.13")]));
        assert!(
            ips(&plan, "bb").is_none(),
            "only one address is not the cluster's"
        );
        let overlap: Vec<&Notice> = plan
            .notices
            .iter()
            .filter(|n| n.reason == reasons::CLUSTER_OVERLAP)
            .collect();
        assert_eq!(overlap.len(), 1);
        assert!(overlap[0].note.contains("podCIDR of node node1"));
        let reports = r.pool_reports(&snap.pools);
        assert_eq!(
            reports[0].1.cluster_overlaps.len(),
            2,
            "{:?}",
            reports[0].1.cluster_overlaps
        );
        assert!(
            r.plan(&snap)
                .notices
                .iter()
                .all(|n| n.reason != reasons::CLUSTER_OVERLAP)
        );
    }

    /// A model of the API server for the fencing property: Services with
    /// resourceVersions, conditional writes, and a log of every state.
    #[derive(Debug, Default, Clone)]
    struct Model {
        services: BTreeMap<String, Service>,
        version: u64,
        /// The state after every change, for the checks.
        states: Vec<BTreeMap<String, Vec<IpAddr>>>,
    }

    impl Model {
        fn bump(&mut self, name: &str) {
            self.version += 1;
            if let Some(s) = self.services.get_mut(name) {
                s.metadata.resource_version = Some(self.version.to_string());
            }
            let state = self
                .services
                .iter()
                .map(|(n, s)| (n.clone(), service::current_ips(s)))
                .collect();
            self.states.push(state);
        }

        fn snapshot(&self, pools: &[Arc<IPAddressPool>]) -> Snapshot {
            Snapshot {
                services: self.services.values().cloned().map(Arc::new).collect(),
                pools: pools.to_vec(),
                ..Snapshot::default()
            }
        }

        /// A conditional write, as the runtime sends it; false on conflict.
        fn write(&mut self, w: &ServiceWrite) -> bool {
            let Some(s) = self.services.get_mut(&w.key.name) else {
                return true;
            };
            if s.metadata.resource_version != w.resource_version {
                return false;
            }
            *s = (*with_status(s, &[], "")).clone();
            let entries: Vec<String> = w.desired.ips.iter().map(ToString::to_string).collect();
            let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
            *s = (*with_status(s, &refs, w.desired.pool.as_deref().unwrap_or_default())).clone();
            self.bump(&w.key.name);
            true
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Create,
        Delete(usize),
        /// The leader plans on a snapshot taken now and writes it later, after
        /// `delay` more steps (a slow or paused leader).
        Plan {
            delay: usize,
        },
        /// The Lease moves: the old leader is fenced, a new one restores afresh.
        Failover,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Step::Create),
            2 => (0usize..8).prop_map(Step::Delete),
            4 => (0usize..4).prop_map(|delay| Step::Plan { delay }),
            1 => Just(Step::Failover),
        ]
    }

    proptest::proptest! {
        /// Whatever interleaving of creations, deletions, slow plans and failovers,
        /// with conditional writes and the fence (an old leader's pending writes are
        /// never sent): no IP is ever held by two Services, and no Service's IP
        /// changes once it has one.
        #[test]
        fn fenced_conditional_writes_never_double_assign(steps in proptest::collection::vec(step(), 1..60)) {
            let pools = vec![pool("p", &["198.18.0.10-198.18.0.15"])];
            let mut api = Model::default();
            let mut term = 0u32;
            let mut leader = Reconciler::new(None);
            let mut pending: Vec<(usize, u32, Vec<ServiceWrite>)> = Vec::new();
            let mut created = 0usize;
            for s in steps {
                match s {
                    Step::Create => {
                        let name = format!("s{created:02}");
                        created += 1;
                        let mut svc = (*svc(&name, json!({}))).clone();
                        svc.metadata.creation_timestamp = None;
                        api.services.insert(name.clone(), svc);
                        api.bump(&name);
                    }
                    Step::Delete(i) => {
                        let name = api.services.keys().nth(i).cloned();
                        if let Some(name) = name {
                            api.services.remove(&name);
                            api.bump(&name);
                        }
                    }
                    Step::Plan { delay } => {
                        let plan = leader.plan(&api.snapshot(&pools));
                        pending.push((delay, term, plan.writes));
                    }
                    Step::Failover => {
                        term += 1;
                        leader = Reconciler::new(None);
                        leader.restore(&api.snapshot(&pools));
                    }
                }
                // Writes come due; those of an older term are fenced.
                for p in &mut pending {
                    p.0 = p.0.saturating_sub(1);
                }
                let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.0 == 0);
                pending = later;
                for (_, t, writes) in due {
                    if t != term {
                        continue;
                    }
                    for w in writes {
                        if api.write(&w) {
                            leader.written(&w, vec![api.version.to_string()]);
                        }
                    }
                }
            }
            let mut held: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
            for state in &api.states {
                let mut seen = BTreeSet::new();
                for (name, ips) in state {
                    for ip in ips {
                        proptest::prop_assert!(seen.insert(*ip), "{ip} held twice in {state:?}");
                    }
                    if let Some(before) = held.get(name)
                        && !before.is_empty()
                        && !ips.is_empty()
                    {
                        proptest::prop_assert_eq!(before, ips, "{} moved", name);
                    }
                    if !ips.is_empty() {
                        held.insert(name.clone(), ips.clone());
                    }
                }
            }
        }
    }
}

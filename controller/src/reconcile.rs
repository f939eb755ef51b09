//! The controller's decisions: a synchronous state machine that takes what the
//! watches show (Services, pools, namespaces) and returns what to write.
//!
//! [`Reconciler::restore`] rebuilds the allocator from every Service's status before
//! anything new is allocated; [`Reconciler::plan`] then brings every Service and
//! pool in line, as one cheap pass over the cached objects (each allocator call is
//! O(log n)). Nothing here talks to the API server: the runtime executes the
//! [`Plan`] and reports successful writes back with [`Reconciler::written`], so a
//! write the watch has not shown yet is not repeated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ferrolb_address::Family;
use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::{Resource, ResourceExt};

use crate::allocator::{
    Allocation, Allocator, LabelOperator, LabelRequirement, LabelSelector, Pool, PoolHealth,
    ServiceAllocation, ServiceKey,
};
use crate::pool::{self, PoolSpecError};
use crate::service::{self, Handling};
use crate::status::{PoolReport, PoolState, ServiceView};

/// Event reasons on Services.
pub mod reasons {
    /// The Service got (new) IPs.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// The Service could not get the IPs it needs; the message says why.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// The Service gave IPs back.
    pub const IP_RELEASED: &str = "IPReleased";
    /// The Service uses a MetalLB spelling of an annotation.
    pub const ALIAS_ANNOTATION: &str = "AliasAnnotation";
}

/// What the watches show, at one instant.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every Service.
    pub services: Vec<Arc<Service>>,
    /// Every IPAddressPool.
    pub pools: Vec<Arc<IPAddressPool>>,
    /// Every Namespace.
    pub namespaces: Vec<Arc<Namespace>>,
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

/// An Event to publish on a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The Service.
    pub reference: ObjectReference,
    /// Warning rather than Normal.
    pub warning: bool,
    /// One of [`reasons`].
    pub reason: &'static str,
    /// The human-readable message.
    pub note: String,
}

/// The result of one allocation decision, for metrics: `result` is `success` or
/// `failure`, `reason` a stable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `success` or `failure`.
    pub result: &'static str,
    /// `assigned`, `restored`, `released`, `invalid_request` or the allocator's reason.
    pub reason: &'static str,
}

/// Everything one pass decided.
#[derive(Debug, Default, Clone)]
pub struct Plan {
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
    applied: Option<Pool>,
    /// Why the current spec cannot be used.
    error: Option<PoolSpecError>,
    /// Whether the allocator holds [`frozen`] `applied` (the spec is invalid).
    frozen: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Reconciler {
    class: Option<String>,
    allocator: Allocator,
    pools: BTreeMap<String, PoolRecord>,
    /// The last AllocationFailed message per Service, so a failure is reported once.
    failures: HashMap<ServiceKey, String>,
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
    /// pools, namespace labels, or IPs returning to the pools.
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
    /// oldest Service first, before anything new is allocated: a restart moves no IP.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Vec<Outcome> {
        self.sync_pools(&snapshot.pools);
        let labels = namespace_labels(&snapshot.namespaces);
        let mut outcomes = Vec::new();
        for svc in ordered(&snapshot.services) {
            if service::handling(svc, self.class.as_deref()) != Handling::Ours {
                continue;
            }
            let ips = service::current_ips(svc);
            if ips.is_empty() {
                continue;
            }
            let ns_labels = ns_labels_of(&labels, svc);
            // A Service whose annotations are wrong keeps its IPs all the same.
            let request = service::translate(svc, ns_labels)
                .map_or_else(|_| service::base_request(svc, ns_labels), |t| t.request);
            let restored = self.allocator.restore(&request, &ips);
            for e in &restored.rejected {
                tracing::info!(service = %request.key, error = %e, "IP not restored");
            }
            if restored.allocation.is_some() {
                outcomes.push(Outcome {
                    result: "success",
                    reason: "restored",
                });
            }
        }
        outcomes
    }

    /// Brings every pool and Service in line with the objects in `snapshot`.
    pub fn plan(&mut self, snapshot: &Snapshot) -> Plan {
        let mut changed = self.sync_pools(&snapshot.pools);
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
            plan.outcomes.push(Outcome {
                result: "success",
                reason: "released",
            });
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
        self.settled.retain(|k, _| seen.contains(k));
        self.displaced.clear();
        self.failures.retain(|k, _| seen.contains(k));
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
        let key = service::key_of(svc);
        let reference = svc.object_ref(&());
        let before = self
            .displaced
            .remove(&key)
            .or_else(|| self.allocator.allocation(&key).cloned());
        let (current, exact) = ServiceView::current(svc);
        let desired = match service::handling(svc, self.class.as_deref()) {
            Handling::Ours => match service::translate(svc, ns_labels) {
                Err(e) => {
                    // No change: keep (and protect) what it holds, say what is wrong.
                    if before.is_none() && !current.ips.is_empty() {
                        let request = service::base_request(svc, ns_labels);
                        self.allocator.restore(&request, &current.ips);
                    }
                    self.fail(&key, reference, e.to_string(), "invalid_request", plan);
                    return;
                }
                Ok(t) => {
                    if before.is_none()
                        && let Some(name) = &t.request.requested_pool
                        && let Some(e) = self.pools.get(name).and_then(|r| r.error.as_ref())
                    {
                        let note = format!(
                            "{key} asks for IPAddressPool {name:?}, which is invalid and takes no new allocations: {e}"
                        );
                        self.fail(&key, reference, note, "pool_invalid", plan);
                        return;
                    }
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
                                plan.outcomes.push(Outcome {
                                    result: "success",
                                    reason: "assigned",
                                });
                            }
                        }
                        Err(e) => {
                            self.fail(&key, reference, e.to_string(), e.reason(), plan);
                        }
                    }
                    ServiceView::of(after.as_ref())
                }
            },
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
        let status = desired.ips != current.ips || (!exact && !desired.ips.is_empty());
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
        plan.outcomes.push(Outcome {
            result: "failure",
            reason,
        });
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
    /// deleted ones removed; an invalid spec keeps the last valid version (so Services
    /// keep their IPs) and is reported.
    fn sync_pools(&mut self, objects: &[Arc<IPAddressPool>]) -> bool {
        let mut changed = false;
        let mut present = BTreeSet::new();
        for object in objects {
            let name = object.name_any();
            present.insert(name.clone());
            let record = self.pools.entry(name.clone()).or_default();
            match pool::translate(object) {
                Ok(p) => {
                    record.error = None;
                    if record.applied.as_ref() != Some(&p) || record.frozen {
                        changed = true;
                        record.applied = Some(p.clone());
                        record.frozen = false;
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
                    // Services keep what they hold from the last valid version, but
                    // the pool takes no new allocations until it is fixed.
                    if !record.frozen
                        && let Some(valid) = record.applied.clone()
                    {
                        record.frozen = true;
                        changed = true;
                        self.allocator.upsert_pool(frozen(valid));
                    }
                }
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
                let state = match (
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
                let report = PoolReport {
                    generation: object.metadata.generation,
                    usage,
                    state,
                };
                (name, report)
            })
            .collect()
    }
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
    plan.outcomes.push(Outcome {
        result: "success",
        reason: "released",
    });
}

/// A pool as the allocator keeps it while its spec is invalid: its addresses, so
/// holders keep their IPs (held IPs are judged by address, not by policy), but no
/// automatic use and a service selector that matches nothing, so nothing new is
/// allocated from it.
fn frozen(mut pool: Pool) -> Pool {
    const KEY: &str = "ferrolb.io/pool-invalid";
    pool.auto_assign = false;
    pool.allocation = Some(ServiceAllocation {
        priority: None,
        namespaces: Vec::new(),
        namespace_selectors: Vec::new(),
        service_selectors: vec![LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![
                LabelRequirement {
                    key: KEY.to_owned(),
                    operator: LabelOperator::Exists,
                },
                LabelRequirement {
                    key: KEY.to_owned(),
                    operator: LabelOperator::DoesNotExist,
                },
            ],
        }],
    });
    pool
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
        .filter(|o| o.reason == "released")
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
        let mut v = json!({
            "metadata": { "namespace": "web", "name": name, "resourceVersion": "1",
                          "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", name.len()) },
            "spec": { "type": "LoadBalancer", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                      "ports": [{ "port": 80, "protocol": "TCP" }] },
        });
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
        Arc::new(serde_json::from_value(v).unwrap())
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
            notes[0].contains("invalid") && notes[0].contains("198.18.0.5/24"),
            "{notes:?}"
        );
        let reports = r.pool_reports(&snap.pools);
        assert!(matches!(reports[0].1.state, PoolState::Invalid { .. }));
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
        };
        r.plan(&snap);
        let reports = r.pool_reports(&snap.pools);
        assert!(matches!(reports[0].1.state, PoolState::Overlapping(ref w) if w[0].0 == "q"));
        assert_eq!(reports[0].1.usage[0].1.total, 4);
    }
}

//! The controller's Prometheus metrics. Names are part of the chart's contract: its
//! PrometheusRule alerts on `ferrolb_pool_size`, `ferrolb_pool_assigned`,
//! `ferrolb_pool_available` and `ferrolb_leader`, its dashboard queries the rest, and
//! docs/operations.md lists every one (a test checks all three).
//!
//! Some gauges describe what only the leader knows (the pools' usage, the strictARP
//! summary). A replica that loses the Lease stops updating them, so it removes them:
//! a standby exports none, and an alert on them never fires on numbers that have
//! stopped moving.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ferrolb_address::Family;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::allocator::{FamilyUsage, ServiceKey};
use crate::service_latency::ServiceLatency;

/// Labels of the per-pool gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PoolLabels {
    /// The pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of `ferrolb_allocations`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AllocationLabels {
    /// `success` or `failure`.
    pub result: String,
    /// Why (`assigned`, `restored`, `released`, or the failure reason).
    pub reason: String,
}

/// Labels of `ferrolb_api_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabels {
    /// The API call that failed, e.g. `patch_service_status`.
    pub operation: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// A gauge without labels that is exported only while set: what a replica knows only
/// while it leads.
#[derive(Debug, Clone, Default)]
struct LeaderGauge(Arc<Mutex<Option<i64>>>);

impl LeaderGauge {
    fn set(&self, value: i64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn get(&self) -> Option<i64> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EncodeMetric for LeaderGauge {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.get() {
            Some(value) => encoder.encode_gauge(&value),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    /// Unset, the metric is left out of `/metrics` entirely, as an empty family is.
    fn is_empty(&self) -> bool {
        self.get().is_none()
    }
}

/// Buckets of `ferrolb_service_ip_latency_seconds`: 1 ms to 5 s around the 100 ms
/// target.
const SERVICE_IP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets of `ferrolb_leader_takeover_seconds`: a takeover lists every watched kind
/// afresh, from tens of milliseconds on a small cluster to seconds at 10,000 Services.
const TAKEOVER_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Every metric, registered once at start-up and shared by the runtime.
#[derive(Debug)]
pub struct Metrics {
    pool_size: MetricFamily<PoolLabels, F64Gauge>,
    pool_assigned: MetricFamily<PoolLabels, F64Gauge>,
    pool_available: MetricFamily<PoolLabels, F64Gauge>,
    allocations: MetricFamily<AllocationLabels, Counter>,
    api_errors: MetricFamily<OperationLabels, Counter>,
    api_writes: MetricFamily<OperationLabels, Counter>,
    write_conflicts: Counter,
    fenced_writes: Counter,
    leader: Gauge,
    strict_arp_at_risk: LeaderGauge,
    strict_arp_reporting: LeaderGauge,
    service_ip_latency: Histogram,
    leader_takeover: Histogram,
    latency: Mutex<ServiceLatency>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            pool_size: MetricFamily::default(),
            pool_assigned: MetricFamily::default(),
            pool_available: MetricFamily::default(),
            allocations: MetricFamily::default(),
            api_errors: MetricFamily::default(),
            api_writes: MetricFamily::default(),
            write_conflicts: Counter::default(),
            fenced_writes: Counter::default(),
            leader: Gauge::default(),
            strict_arp_at_risk: LeaderGauge::default(),
            strict_arp_reporting: LeaderGauge::default(),
            service_ip_latency: Histogram::new(SERVICE_IP_BUCKETS),
            leader_takeover: Histogram::new(TAKEOVER_BUCKETS),
            latency: Mutex::new(ServiceLatency::default()),
        }
    }
}

impl Metrics {
    /// The registry `/metrics` serves, with every metric of the controller in it
    /// (`ferrolb_build_info` included), and the metrics to update.
    pub fn registered() -> (Registry, Self) {
        let mut registry = Registry::default();
        ferrolb_telemetry::register_build_info(&mut registry, "controller");
        let metrics = Self::register(&mut registry);
        (registry, metrics)
    }

    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferrolb_pool_size",
            "Addresses in the pool, per family (buggy IPs excluded when avoided); \
             exported by the leader only",
            m.pool_size.clone(),
        );
        registry.register(
            "ferrolb_pool_assigned",
            "Addresses of the pool assigned to Services, per family; exported by the leader only",
            m.pool_assigned.clone(),
        );
        registry.register(
            "ferrolb_pool_available",
            "Addresses of the pool free for new Services, per family; exported by the leader only",
            m.pool_available.clone(),
        );
        registry.register(
            "ferrolb_allocations",
            "Allocation decisions by result and reason",
            m.allocations.clone(),
        );
        registry.register(
            "ferrolb_api_errors",
            "Failed Kubernetes API calls by operation (each is retried)",
            m.api_errors.clone(),
        );
        registry.register(
            "ferrolb_api_writes",
            "Successful writes to the API server by operation (Events excluded)",
            m.api_writes.clone(),
        );
        registry.register(
            "ferrolb_write_conflicts",
            "Service writes refused because the Service changed since the decision \
             (each is decided again from fresh state)",
            m.write_conflicts.clone(),
        );
        registry.register(
            "ferrolb_fenced_writes",
            "Writes not sent because the Lease was not confirmed as this replica's",
            m.fenced_writes.clone(),
        );
        registry.register(
            "ferrolb_leader",
            "1 when this replica holds the lease and writes, else 0",
            m.leader.clone(),
        );
        registry.register(
            "ferrolb_strict_arp_nodes_at_risk",
            "Nodes whose speaker reports StrictARP False: they answer ARP for every \
             LoadBalancer IP (kube-proxy IPVS mode without strictARP); exported by the \
             leader only",
            m.strict_arp_at_risk.clone(),
        );
        registry.register(
            "ferrolb_strict_arp_nodes_reporting",
            "Nodes whose speaker has checked strictARP (True or False); exported by the \
             leader only",
            m.strict_arp_reporting.clone(),
        );
        registry.register(
            "ferrolb_service_ip_latency_seconds",
            "Seconds from this replica's watch delivering a Service change to the status \
             write with the Service's IPs returning",
            m.service_ip_latency.clone(),
        );
        registry.register(
            "ferrolb_leader_takeover_seconds",
            "Seconds from this replica acquiring the Lease to the end of its first reconcile \
             pass with every due write made",
            m.leader_takeover.clone(),
        );
        m
    }

    /// Sets the strictARP summary gauges.
    pub fn set_strict_arp_at_risk(&self, at_risk: usize, reporting: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.strict_arp_at_risk.set(gauge(at_risk));
        self.strict_arp_reporting.set(gauge(reporting));
    }

    /// Sets a pool's gauges for one family. Counts above 2^53 lose precision as f64,
    /// which alerts on ratios tolerate; the exact counts are in the pool's status.
    #[allow(clippy::cast_precision_loss)]
    pub fn set_pool(&self, pool: &str, family: Family, usage: FamilyUsage) {
        let labels = pool_labels(pool, family);
        self.pool_size
            .get_or_create(&labels)
            .set(usage.total as f64);
        self.pool_assigned
            .get_or_create(&labels)
            .set(usage.assigned as f64);
        self.pool_available
            .get_or_create(&labels)
            .set(usage.available as f64);
    }

    /// Removes a pool's gauges for one family (pool deleted or family gone).
    pub fn remove_pool(&self, pool: &str, family: Family) {
        let labels = pool_labels(pool, family);
        self.pool_size.remove(&labels);
        self.pool_assigned.remove(&labels);
        self.pool_available.remove(&labels);
    }

    /// Counts one allocation decision.
    pub fn allocation(&self, result: &str, reason: &str) {
        self.allocations
            .get_or_create(&AllocationLabels {
                result: result.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one failed API call.
    pub fn api_error(&self, operation: &str) {
        self.api_errors
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Counts one successful write.
    pub fn api_write(&self, operation: &str) {
        self.api_writes
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Counts one write refused with a conflict.
    pub fn write_conflict(&self) {
        self.write_conflicts.inc();
    }

    /// Counts one write the fence held back.
    pub fn fenced_write(&self) {
        self.fenced_writes.inc();
    }

    /// Records whether this replica leads; when it does not, removes what only the
    /// leader exports.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            self.term_ended();
        }
    }

    /// A term as leader ended: removes the gauges only the leader keeps up to date
    /// and forgets the Service changes still waiting for their write.
    pub fn term_ended(&self) {
        self.pool_size.clear();
        self.pool_assigned.clear();
        self.pool_available.clear();
        self.strict_arp_at_risk.clear();
        self.strict_arp_reporting.clear();
        *self.latency() = ServiceLatency::default();
    }

    /// The watch delivered `version` of Service `key` at `at`; `load_balancer`
    /// whether it is of type LoadBalancer.
    pub fn service_seen(&self, key: ServiceKey, version: String, load_balancer: bool, at: Instant) {
        self.latency().seen(key, version, load_balancer, at);
    }

    /// The watch reported Service `key` deleted.
    pub fn service_gone(&self, key: &ServiceKey) {
        self.latency().gone(key);
    }

    /// Whether a Service change waits for a write; see [`Metrics::services_planned`].
    pub fn services_pending(&self) -> bool {
        !self.latency().is_idle()
    }

    /// A pass decided on the Service versions `decided_on` gives and planned a
    /// write for the Services `writing` accepts.
    pub fn services_planned(
        &self,
        decided_on: impl Fn(&ServiceKey) -> Option<String>,
        writing: impl Fn(&ServiceKey) -> bool,
    ) {
        self.latency().planned(decided_on, writing);
    }

    /// The write of Service `key` decided on version `decided` succeeded; its
    /// status call, with IPs, returned at `at`; `produced` are the versions its
    /// calls produced.
    pub fn service_ips_written(
        &self,
        key: &ServiceKey,
        decided: &str,
        produced: &[String],
        at: Instant,
    ) {
        let took = self.latency().written(key, decided, produced, at);
        if let Some(took) = took {
            self.service_ip_latency.observe(took.as_secs_f64());
        }
    }

    /// This replica's first full pass of a term ended `took` after it acquired the
    /// Lease.
    pub fn leader_takeover(&self, took: Duration) {
        self.leader_takeover.observe(took.as_secs_f64());
    }

    fn latency(&self) -> MutexGuard<'_, ServiceLatency> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn pool_labels(pool: &str, family: Family) -> PoolLabels {
    PoolLabels {
        pool: pool.to_owned(),
        family: match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
        .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn usage() -> FamilyUsage {
        FamilyUsage {
            total: 16,
            assigned: 3,
            available: 13,
        }
    }

    #[test]
    fn names_match_the_chart() {
        let (registry, m) = Metrics::registered();
        m.set_pool("prod", Family::V4, usage());
        m.allocation("failure", "pool_exhausted");
        m.api_error("patch_service_status");
        m.api_write("patch_service");
        m.set_leader(true);
        let out = text(&registry);
        for line in [
            "ferrolb_pool_size{pool=\"prod\",family=\"ipv4\"} 16.0",
            "ferrolb_pool_assigned{pool=\"prod\",family=\"ipv4\"} 3.0",
            "ferrolb_pool_available{pool=\"prod\",family=\"ipv4\"} 13.0",
            "ferrolb_allocations_total{result=\"failure\",reason=\"pool_exhausted\"} 1",
            "ferrolb_api_errors_total{operation=\"patch_service_status\"} 1",
            "ferrolb_api_writes_total{operation=\"patch_service\"} 1",
            "ferrolb_leader 1",
        ] {
            assert!(out.contains(line), "missing {line} in\n{out}");
        }
        assert!(out.contains("ferrolb_build_info{version=\""), "{out}");
        assert!(out.contains(",component=\"controller\"} 1"), "{out}");
        m.remove_pool("prod", Family::V4);
        assert!(!text(&registry).contains("pool=\"prod\""));
    }

    /// A replica that loses the Lease shows what a standby shows: `ferrolb_leader 0`
    /// and no pool or strictARP numbers, which only the leader keeps up to date.
    #[test]
    fn losing_the_lease_removes_what_only_the_leader_knows() {
        let (registry, m) = Metrics::registered();
        let standby = text(&registry);
        m.set_leader(true);
        m.set_pool("prod", Family::V4, usage());
        m.set_pool("prod", Family::V6, usage());
        m.set_strict_arp_at_risk(1, 3);
        m.allocation("success", "assigned");
        let leading = text(&registry);
        assert!(
            leading.contains("ferrolb_strict_arp_nodes_at_risk 1\n"),
            "{leading}"
        );
        assert!(
            leading.contains("ferrolb_strict_arp_nodes_reporting 3\n"),
            "{leading}"
        );

        m.set_leader(false);
        let deposed = text(&registry);
        let series = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| !l.starts_with("ferrolb_allocations_total"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            series(&deposed),
            series(&standby),
            "after losing the Lease:\n{deposed}"
        );
        assert!(deposed.contains("ferrolb_leader 0\n"));
        assert!(!deposed.contains("ferrolb_pool_"), "{deposed}");
        assert!(
            !deposed.contains("ferrolb_strict_arp_nodes_at_risk "),
            "{deposed}"
        );
        // Counters are the replica's own history and stay.
        assert!(
            deposed.contains("ferrolb_allocations_total{result=\"success\",reason=\"assigned\"} 1")
        );
    }

    #[test]
    fn service_ip_latency_is_observed_once_per_written_change() {
        let (registry, m) = Metrics::registered();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let web = ServiceKey::new("default", "web");
        m.service_seen(web.clone(), "10".into(), true, t0);
        m.service_ips_written(&web, "10", &["11".into()], t0 + ms(20));
        // Its echo, then a write no Service change asked for.
        m.service_seen(web.clone(), "11".into(), true, t0 + ms(21));
        m.service_ips_written(&web, "11", &[], t0 + ms(500));
        let out = text(&registry);
        assert!(
            out.contains("ferrolb_service_ip_latency_seconds_count 1\n"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_service_ip_latency_seconds_sum 0.02\n"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_service_ip_latency_seconds_bucket{le=\"0.01\"} 0\n")
                && out.contains("ferrolb_service_ip_latency_seconds_bucket{le=\"0.025\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn a_new_term_forgets_changes_seen_in_the_last() {
        let (registry, m) = Metrics::registered();
        let t0 = Instant::now();
        let web = ServiceKey::new("default", "web");
        m.service_seen(web.clone(), "10".into(), true, t0);
        m.set_leader(false);
        m.service_ips_written(&web, "10", &[], t0 + Duration::from_secs(30));
        m.leader_takeover(Duration::from_millis(40));
        let out = text(&registry);
        assert!(
            out.contains("ferrolb_service_ip_latency_seconds_count 0\n"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_leader_takeover_seconds_count 1\n"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_leader_takeover_seconds_bucket{le=\"0.05\"} 1\n"),
            "{out}"
        );
    }

    const DOCS: &str = include_str!("../../docs/operations.md");

    /// The controller metrics table of docs/operations.md lists exactly what the
    /// controller registers, families without series included.
    #[test]
    fn every_metric_is_documented() {
        let (registry, _m) = Metrics::registered();
        let registered = ferrolb_telemetry::registered_metric_names(&registry);
        let documented = ferrolb_telemetry::documented_metric_names(DOCS, "### Controller metrics");
        let (unknown, missing) = ferrolb_telemetry::undocumented_metrics(&registered, &documented);
        assert!(
            missing.is_empty(),
            "registered but not in docs/operations.md's controller metrics table: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "in docs/operations.md's controller metrics table but not registered: {unknown:?}"
        );
    }

    /// Every `ferrolb_*` name in `text`, with a histogram's `_bucket`, `_sum` and
    /// `_count` read as the histogram.
    fn metric_names(text: &str, known: &[String]) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("ferrolb_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| known.iter().any(|k| k == b))
                })
                .unwrap_or(name);
            names.push(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    /// The dashboard is valid JSON with a data-source variable, and every metric it
    /// or an alert queries is documented, so served by one of the binaries (each
    /// binary's test checks its table against its registry).
    #[test]
    fn the_dashboard_and_alerts_query_only_metrics_that_exist() {
        let dashboard = include_str!("../../charts/ferrolb/dashboards/ferrolb.json");
        let json: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let variables = json["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "no ${{datasource}} variable"
        );
        let mut exprs = Vec::new();
        for panel in json["panels"].as_array().unwrap() {
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "panel {} queries nothing",
                panel["title"]
            );
            exprs.extend(
                targets
                    .iter()
                    .map(|t| t["expr"].as_str().unwrap().to_owned()),
            );
        }
        let mut known = ferrolb_telemetry::documented_metric_names(DOCS, "### Controller metrics");
        known.extend(ferrolb_telemetry::documented_metric_names(
            DOCS,
            "### Speaker metrics",
        ));
        let rules = include_str!("../../charts/ferrolb/templates/prometheus-rules.yaml");
        for (source, text) in exprs
            .iter()
            .map(|e| ("the dashboard", e.as_str()))
            .chain([("the PrometheusRule", rules)])
        {
            for name in metric_names(text, &known) {
                assert!(
                    known.contains(&name),
                    "{source} queries {name}, which no binary serves"
                );
            }
        }
        assert!(
            exprs.iter().any(|e| e.contains("histogram_quantile")
                && e.contains("ferrolb_service_ip_latency_seconds_bucket")),
            "no Service→IP latency panel"
        );
    }
}

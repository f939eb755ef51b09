//! The controller's Prometheus metrics. Names are part of the chart's contract: its
//! PrometheusRule alerts on `ferrolb_pool_size`, `ferrolb_pool_assigned` and
//! `ferrolb_pool_available`.

use std::sync::atomic::AtomicU64;

use ferrolb_address::Family;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::allocator::FamilyUsage;

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

/// Every metric, registered once at start-up and shared by the runtime.
#[derive(Debug, Default)]
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
    strict_arp_at_risk: Gauge,
    strict_arp_reporting: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferrolb_pool_size",
            "Addresses in the pool, per family (buggy IPs excluded when avoided)",
            m.pool_size.clone(),
        );
        registry.register(
            "ferrolb_pool_assigned",
            "Addresses of the pool assigned to Services, per family",
            m.pool_assigned.clone(),
        );
        registry.register(
            "ferrolb_pool_available",
            "Addresses of the pool free for new Services, per family",
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
             LoadBalancer IP (kube-proxy IPVS mode without strictARP)",
            m.strict_arp_at_risk.clone(),
        );
        registry.register(
            "ferrolb_strict_arp_nodes_reporting",
            "Nodes whose speaker has checked strictARP (True or False)",
            m.strict_arp_reporting.clone(),
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

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
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

    #[test]
    fn names_match_the_chart() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.set_pool(
            "prod",
            Family::V4,
            FamilyUsage {
                total: 16,
                assigned: 3,
                available: 13,
            },
        );
        m.allocation("failure", "pool_exhausted");
        m.api_error("patch_service_status");
        m.api_write("patch_service");
        m.set_leader(true);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
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
        m.remove_pool("prod", Family::V4);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(!out.contains("pool=\"prod\""));
    }
}

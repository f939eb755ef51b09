//! Tests of the allocator as a whole: named Service scenarios and property tests.

mod frozen;
mod properties;
mod quarantine;
mod reserved;
mod scenarios;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_address::{AddressSet, Family};

use super::{Allocator, IpFamilies, Pool, Port, ServiceKey, ServiceRequest};

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn pool(name: &str, entries: &[&str]) -> Pool {
    Pool::new(name, AddressSet::parse(entries.iter().copied()).unwrap())
}

/// A single-stack IPv4 Service `default/<name>` exposing TCP/80.
pub(super) fn svc(name: &str) -> ServiceRequest {
    ServiceRequest {
        ports: vec![Port::tcp(80)],
        ..ServiceRequest::new(ServiceKey::new("default", name))
    }
}

pub(super) fn dual(name: &str, policy: super::FamilyPolicy) -> ServiceRequest {
    ServiceRequest {
        ip_families: IpFamilies::dual(policy),
        ..svc(name)
    }
}

pub(super) fn v6(name: &str) -> ServiceRequest {
    ServiceRequest {
        ip_families: IpFamilies::single(Family::V6),
        ..svc(name)
    }
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The IPs of an allocation as strings, for terse assertions.
pub(super) fn shown(ips: &[IpAddr]) -> Vec<String> {
    ips.iter().map(ToString::to_string).collect()
}

pub(super) fn allocator(pools: &[(&str, &[&str])]) -> Allocator {
    let mut a = Allocator::new();
    for (name, entries) in pools {
        assert!(a.upsert_pool(pool(name, entries)).is_empty());
    }
    a
}

/// Assigns and returns the IPs as strings; panics with the error's text.
pub(super) fn assigned(a: &mut Allocator, request: &ServiceRequest) -> Vec<String> {
    let allocation = a
        .assign(request)
        .unwrap_or_else(|e| panic!("{}: {e}", request.key));
    shown(&allocation.ips)
}

pub(super) fn requesting(name: &str, ips: &[&str]) -> ServiceRequest {
    ServiceRequest {
        requested_ips: ips.iter().map(|s| ip(s)).collect(),
        ..svc(name)
    }
}

pub(super) fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

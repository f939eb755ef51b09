//! Tests of the allocator as a whole: named Service scenarios and property tests.

mod properties;
mod scenarios;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_address::{AddressSet, Family};

use super::{IpFamilies, Pool, Port, ServiceKey, ServiceRequest};

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

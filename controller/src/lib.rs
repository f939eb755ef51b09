//! The FerroLB controller: assigns IPs from `IPAddressPool`s to `type: LoadBalancer`
//! Services.
//!
//! The [`allocator`] is the pure core: plain data in, decisions out, no Kubernetes
//! client and no async. The Kubernetes adapter (watchers, status writers, events)
//! translates Services, Namespaces and pools into the allocator's types and writes back
//! what it decides.

// Tests may panic on purpose; production code must not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod advertisement;
pub mod allocator;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod convert;
pub mod events;
pub mod gossip_key;
pub mod leader;
pub mod metrics;
pub mod pool;
pub mod reconcile;
pub mod runtime;
pub mod service;
pub mod service_latency;
pub mod status;
pub mod strict_arp;
pub mod uninstall;

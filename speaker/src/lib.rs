//! The FerroLB speaker's pure logic: which node announces which IPs
//! ([`election`]), when to send gratuitous ARP and unsolicited neighbor
//! advertisements ([`schedule`]), and the packets themselves ([`packet`]).
//!
//! Nothing here touches a socket, a clock or the Kubernetes API: time is
//! passed in, bytes come in and go out. The adapters that do I/O are thin
//! layers on top.

// Tests may unwrap: a panic there is a failed test, which is what we want.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod election;
mod error;
pub mod packet;
pub mod schedule;
pub mod strict_arp;

pub use error::Error;
pub mod announcer;
pub mod eligibility;
pub mod heartbeat;
pub mod interfaces;
pub mod metrics;
pub mod responder;
pub mod selector;
pub mod socket;

pub use announcer::{Announcer, AnnouncerConfig, AnnouncerMetrics, InterfaceSelection};
pub mod membership;
pub mod ownership;
pub mod reachability;

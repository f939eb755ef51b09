//! Condition types and reasons used in FerroLB statuses.

/// The object is usable: a pool can serve allocations, a speaker is healthy.
pub const READY: &str = "Ready";
/// A pool shares addresses with another pool (the message names it).
pub const OVERLAPPING: &str = "Overlapping";
/// A pool's addresses could not be parsed (the message says which entry and why).
pub const INVALID: &str = "Invalid";
/// A pool shares addresses with the cluster's own networks (never allocated).
pub const CLUSTER_OVERLAP: &str = "ClusterOverlap";
/// An L2Advertisement names a pool that does not exist.
pub const UNKNOWN_POOLS: &str = "UnknownPools";
/// An L2Advertisement's selectors match nothing.
pub const MATCHES_NOTHING: &str = "MatchesNothing";
/// The node's ARP settings are safe for layer-2 announcements (see the strictARP docs).
pub const STRICT_ARP: &str = "StrictARP";

//! Why an allocation failed, in words a user reads in an `AllocationFailed` Event.

use std::fmt;
use std::net::IpAddr;

use ferrolb_address::{AddressError, Family, IpRange};
use thiserror::Error;

use super::pool::FreezeReason;
use super::service::ServiceKey;
use super::sharing::SharingRefusal;

/// Everything that can go wrong when assigning, restoring or configuring. Each variant
/// names the Service, pool and address concerned and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocationError {
    /// A pool's `spec.addresses` cannot be parsed.
    #[error("IPAddressPool {pool:?} is invalid: {}", join(errors))]
    InvalidPool {
        /// The pool.
        pool: String,
        /// Every rejected entry.
        errors: Vec<AddressError>,
    },

    /// There is no usable pool at all.
    #[error("no IPAddressPool exists for {service}; create one with spec.addresses")]
    NoPools {
        /// The Service.
        service: ServiceKey,
    },

    /// The Service names a pool that does not exist.
    #[error(
        "{service} asks for IPAddressPool {pool:?}, which does not exist; fix the ferrolb.io/address-pool annotation or create the pool"
    )]
    UnknownPool {
        /// The Service.
        service: ServiceKey,
        /// The pool named.
        pool: String,
    },

    /// The pool's serviceAllocation does not admit the Service.
    #[error(
        "IPAddressPool {pool:?} does not serve {service}: its spec.serviceAllocation (namespaces or selectors) does not match this Service"
    )]
    PoolRefusesService {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
    },

    /// The pool overlaps another pool and is not used for new allocations.
    #[error(
        "IPAddressPool {pool:?} overlaps IPAddressPool {other:?} and is not used for new allocations until the overlap is removed ({service} asked for it)"
    )]
    PoolOverlapping {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// A pool holding a common address.
        other: String,
    },

    /// The pool is frozen: it keeps what its Services hold but hands out nothing new,
    /// whether the Service names it, requests an IP of it or would get it
    /// automatically.
    #[error(
        "IPAddressPool {pool:?} takes no new allocations: {reason}; {} ({service} asked for it)",
        .reason.advice()
    )]
    PoolFrozen {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// Why the pool is frozen.
        reason: FreezeReason,
    },

    /// The pool has no free address of the family left.
    #[error(
        "IPAddressPool {pool:?} has no free {family} address left for {service}; free an IP or add addresses to the pool"
    )]
    PoolExhausted {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// The family.
        family: Family,
    },

    /// The pool offers no address of a family the Service needs.
    #[error(
        "IPAddressPool {pool:?} has no {family} addresses but {service} needs one (spec.ipFamilies / ipFamilyPolicy); add {family} addresses to the pool or change the Service's families"
    )]
    PoolLacksFamily {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// The missing family.
        family: Family,
    },

    /// Automatic choice found no pool, or every candidate failed.
    #[error("no IPAddressPool could serve {service}: {}", join(attempts))]
    NoPoolCouldServe {
        /// The Service.
        service: ServiceKey,
        /// Every pool considered and why it did not serve, in the order tried.
        attempts: Vec<PoolAttempt>,
    },

    /// The IP is not in any pool.
    #[error(
        "IP {ip} for {service} is not in any IPAddressPool; request an IP from a pool or add it to one"
    )]
    IpOutsidePools {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
    },

    /// The requested IP lies in one of the cluster's own networks (a Service CIDR, a
    /// pod CIDR, a node address), which are never handed out.
    #[error(
        "IP {ip} for {service} lies in {label} ({range}), a network of the cluster itself, and is never handed out; request another IP"
    )]
    IpReserved {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
        /// What the reserved range is, e.g. `ServiceCIDR kubernetes`.
        label: String,
        /// The reserved range holding the IP (boxed: its 128-bit bounds would double
        /// the size of every error).
        range: Box<IpRange>,
    },

    /// The IP is in a pool's ranges but that pool avoids `.0` and `.255` addresses.
    #[error(
        "IP {ip} for {service} ends in .0 or .255 and IPAddressPool {pool:?} has avoidBuggyIPs set; request another IP"
    )]
    IpAvoided {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },

    /// The IP is not in the pool the Service is bound to (named pool or the pool of its
    /// other IP).
    #[error(
        "IP {ip} for {service} is not in IPAddressPool {pool:?}; request an IP of that pool or change the pool"
    )]
    IpNotInPool {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },

    /// Several IPs of one family were requested.
    #[error("{service} requests more than one {family} IP; request at most one IP per family")]
    TooManyRequestedIps {
        /// The Service.
        service: ServiceKey,
        /// The family.
        family: Family,
    },

    /// An IP's family is not one the Service may hold.
    #[error(
        "IP {ip} for {service} is not of a family the Service uses (spec.ipFamilies / ipFamilyPolicy); request an IP of the Service's family"
    )]
    FamilyNotServed {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
    },

    /// A RequireDualStack Service requested IPs but none of one family.
    #[error(
        "{service} requires dual-stack but requests no {family} IP; request one IP per family or none at all"
    )]
    RequestedIpsMissFamily {
        /// The Service.
        service: ServiceKey,
        /// The family without a requested IP.
        family: Family,
    },

    /// The IP is held by another Service and may not be shared with it.
    #[error("IP {ip} for {service} is in use by {holder} and cannot be shared: {refusal}")]
    IpInUse {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
        /// A Service holding it.
        holder: ServiceKey,
        /// Why sharing is refused (boxed: it is the largest variant's bulk).
        refusal: Box<SharingRefusal>,
    },

    /// An IP the Service held is no longer requested by it.
    #[error("IP {ip} of {service} is no longer requested by the Service")]
    IpNoLongerRequested {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
    },

    /// An IP the Service held comes from a pool other than the one it now names.
    #[error(
        "IP {ip} of {service} comes from IPAddressPool {pool:?} but the Service now asks for {requested:?}"
    )]
    IpFromOtherPool {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
        /// The pool it came from.
        pool: String,
        /// The pool now named.
        requested: String,
    },

    /// The Service holds more IPs (or more of one family) than its families allow.
    #[error(
        "IP {ip} of {service} is more than its ipFamilyPolicy allows (at most one IP per family)"
    )]
    ExtraIp {
        /// The Service.
        service: ServiceKey,
        /// The IP.
        ip: IpAddr,
    },
}

/// One pool considered during automatic choice, and why it did not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAttempt {
    /// The pool.
    pub pool: String,
    /// Why it did not serve.
    pub reason: AttemptFailure,
}

/// Why a pool considered automatically did not serve a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptFailure {
    /// `autoAssign` is false and the Service did not name the pool.
    NotAutoAssign,
    /// Its serviceAllocation does not match the Service.
    NotSelected,
    /// It overlaps another pool.
    Overlapping {
        /// The other pool.
        other: String,
    },
    /// It is frozen.
    Frozen {
        /// Why.
        reason: FreezeReason,
    },
    /// It has no address of a needed family.
    LacksFamily {
        /// The family.
        family: Family,
    },
    /// It has no free address of a needed family.
    Exhausted {
        /// The family.
        family: Family,
    },
}

impl fmt::Display for PoolAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = &self.pool;
        match &self.reason {
            AttemptFailure::NotAutoAssign => {
                write!(
                    f,
                    "pool {pool:?} has autoAssign false and was not requested"
                )
            }
            AttemptFailure::NotSelected => {
                write!(f, "pool {pool:?} serviceAllocation does not match")
            }
            AttemptFailure::Overlapping { other } => {
                write!(f, "pool {pool:?} overlaps pool {other:?}")
            }
            AttemptFailure::Frozen { reason } => {
                write!(f, "pool {pool:?} takes no new allocations: {reason}")
            }
            AttemptFailure::LacksFamily { family } => {
                write!(f, "pool {pool:?} has no {family} addresses")
            }
            AttemptFailure::Exhausted { family } => {
                write!(f, "pool {pool:?} has no free {family} address left")
            }
        }
    }
}

impl AllocationError {
    /// A short, stable label for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidPool { .. } => "invalid_pool",
            Self::NoPools { .. } => "no_pools",
            Self::UnknownPool { .. } => "unknown_pool",
            Self::PoolRefusesService { .. } => "pool_refuses_service",
            Self::PoolOverlapping { .. } => "pool_overlapping",
            Self::PoolFrozen { .. } => "pool_frozen",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::PoolLacksFamily { .. } => "pool_lacks_family",
            Self::NoPoolCouldServe { .. } => "no_pool_could_serve",
            Self::IpOutsidePools { .. } => "ip_outside_pools",
            Self::IpReserved { .. } => "ip_reserved",
            Self::IpAvoided { .. } => "ip_avoided",
            Self::IpNotInPool { .. } => "ip_not_in_pool",
            Self::TooManyRequestedIps { .. } => "too_many_requested_ips",
            Self::FamilyNotServed { .. } => "family_not_served",
            Self::RequestedIpsMissFamily { .. } => "requested_ips_miss_family",
            Self::IpInUse { .. } => "ip_in_use",
            Self::IpNoLongerRequested { .. } => "ip_no_longer_requested",
            Self::IpFromOtherPool { .. } => "ip_from_other_pool",
            Self::ExtraIp { .. } => "extra_ip",
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

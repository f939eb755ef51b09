//! Choosing a pool and addresses for one Service, and restoring what it held.
//!
//! Order of decisions in [`Allocator::assign`]:
//! 1. IPs the Service already holds are checked against its current request; the
//!    valid ones are kept unchanged (stability), the others are released.
//! 2. A Service holding IPs only gains missing families, from the same pool.
//! 3. Otherwise requested IPs, if any, decide everything: the Service gets exactly
//!    those, from the pool that offers them, or an error.
//! 4. Otherwise the pool is the requested one, or the first automatic candidate
//!    that can serve: pools whose serviceAllocation matches by priority (lower
//!    first, unset after set), then plain autoAssign pools; ties by pool name.
//!    A sharing key first looks for an IP it may share in that pool, then a free one.
//!
//! Frozen pools and reserved addresses only ever refuse: a frozen pool is never
//! chosen for anything new (named, requested, automatic, shared or a missing family),
//! and a reserved address is never handed out (free, shared or requested). Neither
//! takes away what a Service already holds.
//!
//! New addresses are claimed only after every family has been planned, so a failed
//! attempt leaves no trace (the quarantine order of released IPs included).

use std::net::IpAddr;

use ferrolb_address::{Family, to_bits};

use super::error::{AllocationError, AttemptFailure, PoolAttempt};
use super::pool::by_rank_then_name;
use super::service::{FamilyPolicy, ServiceRequest};
use super::sharing::ShareProfile;
use super::{Allocation, Allocator, Holding, PoolEntry, slot};

/// What [`Allocator::restore`] kept and what it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The IPs kept, if any.
    pub allocation: Option<Allocation>,
    /// One error per IP that is no longer valid, to report on the Service.
    pub rejected: Vec<AllocationError>,
}

/// How one family will be served, decided before anything is claimed.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// A specific IP: requested, or a shareable one.
    Ip(IpAddr),
    /// The next free address of the family.
    Free(Family),
}

impl Allocator {
    /// Assigns IPs to a Service, or confirms the ones it holds.
    ///
    /// A Service whose IPs are all still valid gets them back unchanged. On error the
    /// Service keeps its still-valid IPs (see [`Allocator::allocation`]); invalid ones
    /// are released either way, and nothing new is claimed.
    pub fn assign(&mut self, request: &ServiceRequest) -> Result<Allocation, AllocationError> {
        let profile = ShareProfile::of(request);
        if self.services.contains_key(&request.key) {
            self.revalidate(request, &profile);
        } else if !request.current_ips.is_empty() {
            // No record yet (e.g. a Service seen for the first time after start-up):
            // keep what its status shows when still valid, exactly like a restore.
            self.restore(request, &request.current_ips);
        }
        let result = match self.services.get(&request.key) {
            Some(holding) => {
                let pool = holding.allocation.pool.clone();
                self.complete(request, &profile, &pool)
            }
            None if !request.requested_ips.is_empty() => self.assign_requested(request, &profile),
            None => self.assign_automatic(request, &profile),
        };
        self.mark_incomplete(request);
        result
    }

    /// Records whether the Service holds fewer families than it asks for.
    fn mark_incomplete(&mut self, request: &ServiceRequest) {
        if let Some(holding) = self.services.get_mut(&request.key) {
            holding.incomplete = !missing_families(request, &holding.allocation.ips).is_empty();
        }
    }

    /// Rebuilds a Service's allocation from the IPs its status shows, before any new
    /// allocation happens. Valid IPs are recorded as held; each invalid one is
    /// reported and left out. Replaces whatever the allocator held for the Service.
    ///
    /// When two Services' statuses claim the same IP and may not share it, the one
    /// restored first keeps it: restore in a stable order (e.g. creation time).
    ///
    /// IPs of a frozen pool and IPs inside reserved ranges are kept like any other:
    /// stability first, the Service already uses them. Only new allocations are
    /// refused there.
    pub fn restore(&mut self, request: &ServiceRequest, ips: &[IpAddr]) -> Restored {
        self.release(&request.key);
        let profile = ShareProfile::of(request);
        let Some(pool) = self.attribute(request, ips) else {
            let rejected = ips
                .iter()
                .map(|ip| self.outside_error(request, *ip))
                .collect();
            return Restored {
                allocation: None,
                rejected,
            };
        };
        let verdicts = self.judge(request, &profile, &pool, ips);
        let mut kept = Vec::new();
        let mut rejected = Vec::new();
        for (ip, verdict) in ips.iter().zip(verdicts) {
            match verdict {
                Ok(()) => kept.push(*ip),
                Err(e) => rejected.push(e),
            }
        }
        if kept.is_empty() {
            return Restored {
                allocation: None,
                rejected,
            };
        }
        for ip in &kept {
            self.claim(&request.key, profile.key.as_ref(), *ip);
        }
        sort_by_families(request, &mut kept);
        let allocation = Allocation { pool, ips: kept };
        self.services.insert(
            request.key.clone(),
            Holding {
                allocation: allocation.clone(),
                profile,
                incomplete: false,
            },
        );
        self.mark_incomplete(request);
        Restored {
            allocation: Some(allocation),
            rejected,
        }
    }

    /// The pool restored IPs are attributed to: the one the output annotation names
    /// when it offers one of them, else the best-ranked pool offering the first IP
    /// that any pool offers.
    fn attribute(&self, request: &ServiceRequest, ips: &[IpAddr]) -> Option<String> {
        if let Some(named) = &request.current_pool
            && let Some(entry) = self.pools.get(named)
            && ips.iter().any(|ip| entry.pool.offers(*ip))
        {
            return Some(named.clone());
        }
        ips.iter().find_map(|ip| {
            self.pools
                .values()
                .filter(|e| e.pool.offers(*ip))
                .min_by(|a, b| {
                    by_rank_then_name(
                        (a.pool.attribution_rank(request), &a.pool.name),
                        (b.pool.attribution_rank(request), &b.pool.name),
                    )
                })
                .map(|e| e.pool.name.clone())
        })
    }

    /// The error for an IP no pool offers.
    fn outside_error(&self, request: &ServiceRequest, ip: IpAddr) -> AllocationError {
        match self.pools.values().find(|e| e.pool.avoids_ip(ip)) {
            Some(e) => AllocationError::IpAvoided {
                service: request.key.clone(),
                ip,
                pool: e.pool.name.clone(),
            },
            None => AllocationError::IpOutsidePools {
                service: request.key.clone(),
                ip,
            },
        }
    }

    /// Whether each of `ips`, attributed to `pool`, may be held by the Service as it
    /// is now. IPs earlier in the list win over later ones of the same family.
    fn judge(
        &self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        pool: &str,
        ips: &[IpAddr],
    ) -> Vec<Result<(), AllocationError>> {
        let service = &request.key;
        let allowed = request.ip_families.allowed();
        let max = request.ip_families.max_ips();
        let mut seen: Vec<Family> = Vec::with_capacity(2);
        let entry = self.pools.get(pool);
        ips.iter()
            .map(|&ip| {
                let family = Family::of(ip);
                if !entry.is_some_and(|e| e.pool.offers(ip)) {
                    return Err(if self.pools.values().any(|e| e.pool.offers(ip)) {
                        AllocationError::IpNotInPool {
                            service: service.clone(),
                            ip,
                            pool: pool.to_owned(),
                        }
                    } else {
                        self.outside_error(request, ip)
                    });
                }
                if let Some(requested) = &request.requested_pool
                    && requested != pool
                {
                    return Err(AllocationError::IpFromOtherPool {
                        service: service.clone(),
                        ip,
                        pool: pool.to_owned(),
                        requested: requested.clone(),
                    });
                }
                if !request.requested_ips.is_empty() && !request.requested_ips.contains(&ip) {
                    return Err(AllocationError::IpNoLongerRequested {
                        service: service.clone(),
                        ip,
                    });
                }
                if !allowed.contains(&family) {
                    return Err(AllocationError::FamilyNotServed {
                        service: service.clone(),
                        ip,
                    });
                }
                if seen.contains(&family) || seen.len() >= max {
                    return Err(AllocationError::ExtraIp {
                        service: service.clone(),
                        ip,
                    });
                }
                self.check_sharing(request, profile, ip)?;
                seen.push(family);
                Ok(())
            })
            .collect()
    }

    /// Whether the Service may hold `ip` alongside its current holders.
    fn check_sharing(
        &self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        ip: IpAddr,
    ) -> Result<(), AllocationError> {
        let Some(used) = self.ips.get(&ip) else {
            return Ok(());
        };
        for holder in used.users.iter().filter(|u| **u != request.key) {
            let Some(theirs) = self.services.get(holder) else {
                continue;
            };
            profile.may_share_with(&theirs.profile).map_err(|refusal| {
                AllocationError::IpInUse {
                    service: request.key.clone(),
                    ip,
                    holder: holder.clone(),
                    refusal: Box::new(refusal),
                }
            })?;
        }
        Ok(())
    }

    /// Drops held IPs that are no longer valid for the request and records the
    /// Service's new sharing profile.
    fn revalidate(&mut self, request: &ServiceRequest, profile: &ShareProfile) {
        let Some(holding) = self.services.get(&request.key) else {
            return;
        };
        let pool = holding.allocation.pool.clone();
        let ips = holding.allocation.ips.clone();
        let verdicts = self.judge(request, profile, &pool, &ips);
        let mut kept = Vec::with_capacity(ips.len());
        for (ip, verdict) in ips.into_iter().zip(verdicts) {
            if verdict.is_ok() {
                kept.push(ip);
            } else {
                self.unclaim(&request.key, ip);
            }
        }
        if kept.is_empty() {
            self.services.remove(&request.key);
            return;
        }
        // A kept IP with other holders has their (equal) key; one held alone follows
        // its holder's key, so the sharing index stays exact.
        for ip in &kept {
            self.rekey(*ip, profile.key.as_ref());
        }
        sort_by_families(request, &mut kept);
        if let Some(holding) = self.services.get_mut(&request.key) {
            holding.allocation.ips = kept;
            holding.profile = profile.clone();
        }
    }

    /// Adds missing families to a Service holding valid IPs, from the same pool.
    fn complete(
        &mut self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        pool: &str,
    ) -> Result<Allocation, AllocationError> {
        let policy = request.ip_families.policy;
        let missing = self
            .services
            .get(&request.key)
            .map(|h| missing_families(request, &h.allocation.ips))
            .unwrap_or_default();
        if !missing.is_empty() {
            // Held IPs stay whatever the pool's policy now says, but a new family
            // comes only from a pool that still serves the Service and takes new
            // allocations.
            let usable = self.usable_pool(request, pool);
            let picks: Vec<Result<Pick, AllocationError>> = missing
                .iter()
                .map(|f| match &usable {
                    Ok(entry) => self.plan(request, profile, entry, *f),
                    Err(e) => Err(e.clone()),
                })
                .collect();
            let mut chosen = Vec::new();
            for (family, pick) in missing.iter().zip(picks) {
                match pick {
                    Ok(p) => chosen.push(p),
                    // A requested IP that cannot be had is always an error; so is any
                    // missing family of a RequireDualStack Service.
                    Err(e)
                        if policy == FamilyPolicy::RequireDualStack
                            || requested_of(request, *family).is_some() =>
                    {
                        return Err(e);
                    }
                    // PreferDualStack: keep what we have and try again next time.
                    Err(_) => {}
                }
            }
            self.commit(request, profile, pool, chosen);
        }
        self.services
            .get(&request.key)
            .map(|h| h.allocation.clone())
            .ok_or_else(|| AllocationError::UnknownPool {
                service: request.key.clone(),
                pool: pool.to_owned(),
            })
    }

    /// Serves a Service that requests specific IPs: exactly those, or an error.
    fn assign_requested(
        &mut self,
        request: &ServiceRequest,
        profile: &ShareProfile,
    ) -> Result<Allocation, AllocationError> {
        let service = &request.key;
        let allowed = request.ip_families.allowed();
        let mut seen: Vec<Family> = Vec::with_capacity(2);
        for &ip in &request.requested_ips {
            let family = Family::of(ip);
            if seen.contains(&family) {
                return Err(AllocationError::TooManyRequestedIps {
                    service: service.clone(),
                    family,
                });
            }
            if !allowed.contains(&family) || seen.len() >= request.ip_families.max_ips() {
                return Err(AllocationError::FamilyNotServed {
                    service: service.clone(),
                    ip,
                });
            }
            seen.push(family);
        }
        if request.ip_families.policy == FamilyPolicy::RequireDualStack
            && let Some(family) = request
                .ip_families
                .ordered()
                .into_iter()
                .find(|f| !seen.contains(f))
        {
            return Err(AllocationError::RequestedIpsMissFamily {
                service: service.clone(),
                family,
            });
        }
        let pool = match &request.requested_pool {
            Some(named) => named.clone(),
            None => self.pool_for_requested(request)?,
        };
        let entry = self.usable_pool(request, &pool)?;
        let picks = request
            .requested_ips
            .iter()
            .map(|ip| self.plan(request, profile, entry, Family::of(*ip)))
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(request, profile, &pool, picks);
        self.finished(request, &pool)
    }

    /// The pool that should serve the requested IPs: among pools offering the first
    /// one, usable pools first, then by rank and name.
    fn pool_for_requested(&self, request: &ServiceRequest) -> Result<String, AllocationError> {
        let Some(&ip) = request.requested_ips.first() else {
            return Err(AllocationError::NoPools {
                service: request.key.clone(),
            });
        };
        self.pools
            .values()
            .filter(|e| e.pool.offers(ip))
            .min_by(|a, b| {
                let key = |e: &PoolEntry| {
                    let unusable = e.frozen.is_some() || !e.overlaps.is_empty();
                    (
                        (unusable, e.pool.attribution_rank(request)),
                        e.pool.name.clone(),
                    )
                };
                let (ka, kb) = (key(a), key(b));
                by_rank_then_name((ka.0, &ka.1), (kb.0, &kb.1))
            })
            .map(|e| e.pool.name.clone())
            .ok_or_else(|| self.outside_error(request, ip))
    }

    /// The named pool, if it exists, takes new allocations and serves the Service.
    fn usable_pool(
        &self,
        request: &ServiceRequest,
        pool: &str,
    ) -> Result<&PoolEntry, AllocationError> {
        let service = &request.key;
        let entry = self
            .pools
            .get(pool)
            .ok_or_else(|| AllocationError::UnknownPool {
                service: service.clone(),
                pool: pool.to_owned(),
            })?;
        if let Some(reason) = entry.frozen {
            return Err(AllocationError::PoolFrozen {
                service: service.clone(),
                pool: pool.to_owned(),
                reason,
            });
        }
        if !entry.pool.serves(request) {
            return Err(AllocationError::PoolRefusesService {
                service: service.clone(),
                pool: pool.to_owned(),
            });
        }
        if let Some(other) = entry.first_overlap() {
            return Err(AllocationError::PoolOverlapping {
                service: service.clone(),
                pool: pool.to_owned(),
                other: other.clone(),
            });
        }
        Ok(entry)
    }

    /// Serves a Service without requested IPs: from the named pool or the first
    /// automatic candidate that can.
    fn assign_automatic(
        &mut self,
        request: &ServiceRequest,
        profile: &ShareProfile,
    ) -> Result<Allocation, AllocationError> {
        if let Some(named) = &request.requested_pool {
            let entry = self.usable_pool(request, named)?;
            let picks = self.plan_pool(request, profile, entry, true)?;
            let pool = named.clone();
            self.commit(request, profile, &pool, picks);
            return self.finished(request, &pool);
        }
        if self.pools.is_empty() {
            return Err(AllocationError::NoPools {
                service: request.key.clone(),
            });
        }
        let mut skipped = Vec::new();
        let mut candidates: Vec<((u8, i64), &str)> = Vec::new();
        for entry in self.pools.values() {
            let name = entry.pool.name.as_str();
            let reason = match (entry.frozen, entry.pool.auto_rank(request)) {
                (Some(reason), _) => AttemptFailure::Frozen { reason },
                (None, None) if !entry.pool.auto_assign => AttemptFailure::NotAutoAssign,
                (None, None) => AttemptFailure::NotSelected,
                (None, Some(rank)) => match entry.first_overlap() {
                    Some(other) => AttemptFailure::Overlapping {
                        other: other.clone(),
                    },
                    None => {
                        candidates.push((rank, name));
                        continue;
                    }
                },
            };
            skipped.push(PoolAttempt {
                pool: name.to_owned(),
                reason,
            });
        }
        candidates.sort_by(|a, b| by_rank_then_name(*a, *b));
        // PreferDualStack: a pool that can give every family beats an earlier one that
        // can give only some; the second pass accepts a partial answer.
        let passes: &[bool] = if request.ip_families.policy == FamilyPolicy::PreferDualStack {
            &[false, true]
        } else {
            &[false]
        };
        let mut failures = Vec::new();
        let mut chosen = None;
        'passes: for &partial in passes {
            failures.clear();
            for (_, name) in &candidates {
                let Some(entry) = self.pools.get(*name) else {
                    continue;
                };
                match self.plan_pool(request, profile, entry, partial) {
                    Ok(picks) => {
                        chosen = Some(((*name).to_owned(), picks));
                        break 'passes;
                    }
                    Err(e) => failures.push(((*name).to_owned(), e)),
                }
            }
        }
        if let Some((pool, picks)) = chosen {
            self.commit(request, profile, &pool, picks);
            return self.finished(request, &pool);
        }
        // One candidate and nothing skipped: its own precise error says it all.
        if skipped.is_empty()
            && failures.len() == 1
            && let Some((_, e)) = failures.pop()
        {
            return Err(e);
        }
        let mut attempts: Vec<PoolAttempt> = failures
            .into_iter()
            .map(|(pool, e)| PoolAttempt {
                pool,
                reason: attempt_failure(&e),
            })
            .collect();
        attempts.extend(skipped);
        Err(AllocationError::NoPoolCouldServe {
            service: request.key.clone(),
            attempts,
        })
    }

    /// Plans every family the Service needs from one pool. With `partial`, a
    /// PreferDualStack Service takes the families the pool can give when it cannot
    /// give all, as long as there is one.
    fn plan_pool(
        &self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        entry: &PoolEntry,
        partial: bool,
    ) -> Result<Vec<Pick>, AllocationError> {
        let families = &request.ip_families;
        let wanted: Vec<Family> = match families.policy {
            FamilyPolicy::SingleStack if families.families.is_empty() => {
                // No family stated: the first the pool offers, IPv4 first.
                let ordered = families.ordered();
                let first = ordered
                    .iter()
                    .copied()
                    .find(|f| entry.pool.has_family(*f))
                    .unwrap_or(Family::V4);
                vec![first]
            }
            FamilyPolicy::SingleStack => families.ordered().into_iter().take(1).collect(),
            FamilyPolicy::PreferDualStack | FamilyPolicy::RequireDualStack => families.ordered(),
        };
        let mut picks = Vec::with_capacity(wanted.len());
        let mut first_error = None;
        for family in wanted {
            match self.plan(request, profile, entry, family) {
                Ok(p) => picks.push(p),
                Err(e) if partial && families.policy == FamilyPolicy::PreferDualStack => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match first_error {
            Some(e) if picks.is_empty() => Err(e),
            _ => Ok(picks),
        }
    }

    /// How one family of the Service will be served from `entry`, without claiming.
    fn plan(
        &self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        entry: &PoolEntry,
        family: Family,
    ) -> Result<Pick, AllocationError> {
        let service = &request.key;
        let pool = &entry.pool;
        if let Some(ip) = requested_of(request, family) {
            if !pool.offers(ip) {
                return Err(if pool.avoids_ip(ip) {
                    AllocationError::IpAvoided {
                        service: service.clone(),
                        ip,
                        pool: pool.name.clone(),
                    }
                } else {
                    AllocationError::IpNotInPool {
                        service: service.clone(),
                        ip,
                        pool: pool.name.clone(),
                    }
                });
            }
            if let Some((label, range)) = self.reserved.covering(ip) {
                return Err(AllocationError::IpReserved {
                    service: service.clone(),
                    ip,
                    label: label.to_owned(),
                    range: Box::new(range),
                });
            }
            self.check_sharing(request, profile, ip)?;
            return Ok(Pick::Ip(ip));
        }
        if !pool.has_family(family) {
            return Err(AllocationError::PoolLacksFamily {
                service: service.clone(),
                pool: pool.name.clone(),
                family,
            });
        }
        if let Some(ip) = self.shareable(request, profile, entry, family) {
            return Ok(Pick::Ip(ip));
        }
        if entry.space[slot(family)].available() == 0 {
            return Err(AllocationError::PoolExhausted {
                service: service.clone(),
                pool: pool.name.clone(),
                family,
            });
        }
        Ok(Pick::Free(family))
    }

    /// An IP of the pool and family already held under the Service's sharing key that
    /// it may share, lowest first; never a reserved one (its holders keep it, nobody
    /// joins them).
    fn shareable(
        &self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        entry: &PoolEntry,
        family: Family,
    ) -> Option<IpAddr> {
        let key = profile.key.as_ref()?;
        self.shared.get(key)?.iter().copied().find(|ip| {
            Family::of(*ip) == family
                && entry.pool.offers(*ip)
                && !self.reserved.holds(*ip)
                && !self.holders(*ip).contains(&request.key)
                && self.check_sharing(request, profile, *ip).is_ok()
        })
    }

    /// Claims the planned addresses and records them for the Service.
    fn commit(
        &mut self,
        request: &ServiceRequest,
        profile: &ShareProfile,
        pool: &str,
        picks: Vec<Pick>,
    ) {
        if picks.is_empty() {
            return;
        }
        let mut ips = Vec::with_capacity(picks.len());
        for pick in picks {
            let ip = match pick {
                Pick::Ip(ip) => ip,
                Pick::Free(family) => {
                    let Some(bits) = self
                        .pools
                        .get_mut(pool)
                        .and_then(|e| e.space[slot(family)].take())
                    else {
                        // Planned as available an instant ago; nothing to claim.
                        continue;
                    };
                    ferrolb_address::from_bits(family, bits)
                }
            };
            self.claim(&request.key, profile.key.as_ref(), ip);
            ips.push(ip);
        }
        let holding = self
            .services
            .entry(request.key.clone())
            .or_insert_with(|| Holding {
                allocation: Allocation {
                    pool: pool.to_owned(),
                    ips: Vec::new(),
                },
                profile: profile.clone(),
                incomplete: false,
            });
        holding.allocation.ips.extend(ips);
        holding.profile = profile.clone();
        sort_by_families(request, &mut holding.allocation.ips);
    }

    fn finished(
        &self,
        request: &ServiceRequest,
        pool: &str,
    ) -> Result<Allocation, AllocationError> {
        self.allocation(&request.key)
            .cloned()
            .ok_or_else(|| AllocationError::PoolExhausted {
                service: request.key.clone(),
                pool: pool.to_owned(),
                family: request
                    .ip_families
                    .ordered()
                    .first()
                    .copied()
                    .unwrap_or(Family::V4),
            })
    }
}

/// The families a Service holding `ips` still lacks. A single-stack Service lacks
/// nothing once it holds one IP; with requested IPs only their families count.
fn missing_families(request: &ServiceRequest, ips: &[IpAddr]) -> Vec<Family> {
    if request.ip_families.policy == FamilyPolicy::SingleStack && !ips.is_empty() {
        return Vec::new();
    }
    request
        .ip_families
        .ordered()
        .into_iter()
        .filter(|f| !ips.iter().any(|ip| Family::of(*ip) == *f))
        .filter(|f| request.requested_ips.is_empty() || requested_of(request, *f).is_some())
        .collect()
}

/// The requested IP of `family`, if any.
fn requested_of(request: &ServiceRequest, family: Family) -> Option<IpAddr> {
    request
        .requested_ips
        .iter()
        .copied()
        .find(|ip| Family::of(*ip) == family)
}

/// Orders IPs as the Service lists its families.
fn sort_by_families(request: &ServiceRequest, ips: &mut [IpAddr]) {
    let order = request.ip_families.ordered();
    ips.sort_by_key(|ip| {
        let family = to_bits(*ip).0;
        order
            .iter()
            .position(|f| *f == family)
            .unwrap_or(order.len())
    });
}

/// The attempt-list form of a per-pool error.
fn attempt_failure(e: &AllocationError) -> AttemptFailure {
    match e {
        AllocationError::PoolLacksFamily { family, .. } => {
            AttemptFailure::LacksFamily { family: *family }
        }
        AllocationError::PoolExhausted { family, .. } => {
            AttemptFailure::Exhausted { family: *family }
        }
        AllocationError::PoolOverlapping { other, .. } => AttemptFailure::Overlapping {
            other: other.clone(),
        },
        AllocationError::PoolRefusesService { .. } => AttemptFailure::NotSelected,
        AllocationError::PoolFrozen { reason, .. } => AttemptFailure::Frozen { reason: *reason },
        // Without requested IPs a pool fails only for the reasons above; anything else
        // is reported as lack of space, the closest user-visible meaning.
        _ => AttemptFailure::Exhausted { family: Family::V4 },
    }
}

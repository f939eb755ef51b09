//! Frozen pools: they keep what Services hold and hand out nothing new.

use ferrolb_address::Family;

use super::super::{
    AllocationError, AttemptFailure, FamilyPolicy, FreezeReason, Pool, PoolAttempt,
    ServiceAllocation, ServiceRequest, SharingKey,
};
use super::{allocator, assigned, dual, key, pool, requesting, shown, svc};

fn naming(name: &str, pool: &str) -> ServiceRequest {
    ServiceRequest {
        requested_pool: Some(pool.into()),
        ..svc(name)
    }
}

#[test]
fn a_frozen_pool_is_skipped_automatically() {
    let mut a = allocator(&[("a", &["198.18.0.0/28"]), ("b", &["198.18.1.0/28"])]);
    assert!(a.set_frozen("a", Some(FreezeReason::Deleting)));
    assert_eq!(a.frozen("a"), Some(FreezeReason::Deleting));
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.1.0"]);
    a.remove_pool("b");
    let err = a.assign(&svc("t")).unwrap_err();
    assert_eq!(
        err,
        AllocationError::NoPoolCouldServe {
            service: key("t"),
            attempts: vec![PoolAttempt {
                pool: "a".into(),
                reason: AttemptFailure::Frozen {
                    reason: FreezeReason::Deleting
                },
            }],
        }
    );
    assert_eq!(
        err.to_string(),
        "no IPAddressPool could serve default/t: pool \"a\" takes no new allocations: it is being deleted"
    );
}

#[test]
fn a_frozen_pool_selected_by_service_allocation_is_skipped() {
    let mut a = allocator(&[("plain", &["198.18.1.0/28"])]);
    a.upsert_pool(Pool {
        allocation: Some(ServiceAllocation {
            priority: Some(1),
            ..Default::default()
        }),
        ..pool("first", &["198.18.0.0/28"])
    });
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.0.0"]);
    a.set_frozen("first", Some(FreezeReason::Invalid));
    assert_eq!(assigned(&mut a, &svc("t")), ["198.18.1.0"]);
}

#[test]
fn a_service_naming_a_frozen_pool_is_told_why_and_what_to_do() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    a.set_frozen("p", Some(FreezeReason::Deleting));
    let err = a.assign(&naming("s", "p")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPAddressPool \"p\" takes no new allocations: it is being deleted; use another pool (default/s asked for it)"
    );
    assert_eq!(err.reason(), "pool_frozen");
    a.set_frozen("p", Some(FreezeReason::Invalid));
    let err = a.assign(&naming("s", "p")).unwrap_err();
    assert!(
        err.to_string()
            .contains("its spec is invalid; fix the pool's spec to use it again"),
        "{err}"
    );
}

#[test]
fn a_requested_ip_inside_a_frozen_pool_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    a.set_frozen("p", Some(FreezeReason::Invalid));
    let err = a.assign(&requesting("s", &["198.18.0.7"])).unwrap_err();
    assert_eq!(
        err,
        AllocationError::PoolFrozen {
            service: key("s"),
            pool: "p".into(),
            reason: FreezeReason::Invalid,
        }
    );
    assert!(a.allocation(&key("s")).is_none());
}

#[test]
fn services_keep_what_they_hold_in_a_frozen_pool_and_restore_it() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let held = a.assign(&requesting("s", &["198.18.0.7"])).unwrap();
    a.set_frozen("p", Some(FreezeReason::Deleting));
    assert_eq!(a.assign(&requesting("s", &["198.18.0.7"])).unwrap(), held);
    let usage = a.usage("p", Family::V4).unwrap();
    assert_eq!((usage.total, usage.assigned, usage.available), (16, 1, 15));

    let mut b = allocator(&[("p", &["198.18.0.0/28"])]);
    b.set_frozen("p", Some(FreezeReason::Deleting));
    let restored = b.restore(&svc("s"), &held.ips);
    assert_eq!(restored.allocation, Some(held));
    assert!(restored.rejected.is_empty());
}

#[test]
fn a_frozen_pool_adds_no_missing_family_and_shares_no_ip() {
    let mut a = allocator(&[("p", &["198.18.0.0/31", "2001:db8::/127"])]);
    assigned(&mut a, &svc("x"));
    assigned(&mut a, &svc("y"));
    // p has no IPv4 left: a PreferDualStack Service gets IPv6 only.
    let prefer = dual("d", FamilyPolicy::PreferDualStack);
    assert_eq!(assigned(&mut a, &prefer), ["2001:db8::"]);
    let shared = ServiceRequest {
        sharing_key: SharingKey::new("k"),
        ..svc("k1")
    };
    a.release(&key("x"));
    assert_eq!(assigned(&mut a, &shared), ["198.18.0.0"]);
    a.set_frozen("p", Some(FreezeReason::Invalid));
    a.release(&key("y"));
    // Room for IPv4 again, but the pool is frozen: the Service keeps what it has.
    assert_eq!(assigned(&mut a, &prefer), ["2001:db8::"]);
    let joining = ServiceRequest {
        sharing_key: SharingKey::new("k"),
        ports: vec![super::super::Port::tcp(443)],
        ..svc("k2")
    };
    let err = a.assign(&joining).unwrap_err();
    assert!(
        matches!(&err, AllocationError::NoPoolCouldServe { attempts, .. }
            if matches!(attempts[0].reason, AttemptFailure::Frozen { .. })),
        "{err}"
    );
}

#[test]
fn freezing_survives_upserts_and_ends_only_when_thawed_or_removed() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assert!(!a.set_frozen("unknown", Some(FreezeReason::Invalid)));
    assert_eq!(a.frozen("unknown"), None);
    a.set_frozen("p", Some(FreezeReason::Invalid));
    a.upsert_pool(pool("p", &["198.18.0.0/27"]));
    assert_eq!(a.frozen("p"), Some(FreezeReason::Invalid));
    assert!(a.assign(&svc("s")).is_err());
    assert!(a.set_frozen("p", None));
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.0.0"]);
    a.set_frozen("p", Some(FreezeReason::Deleting));
    a.remove_pool("p");
    a.upsert_pool(pool("p", &["198.18.0.0/27"]));
    assert_eq!(a.frozen("p"), None, "a pool created again starts thawed");
    assert_eq!(shown(&a.assign(&svc("s")).unwrap().ips), ["198.18.0.0"]);
}

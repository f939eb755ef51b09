//! One test per Service behaviour, named after it.

use ferrolb_address::Family;

use super::super::{
    AllocationError, Allocator, AttemptFailure, FamilyPolicy, FamilyUsage, IpFamilies,
    LabelSelector, PoolHealth, Port, ServiceAllocation, ServiceKey, ServiceRequest, SharingKey,
    SharingRefusal, TrafficPolicy,
};
use super::{allocator, assigned, dual, ip, key, labels, pool, requesting, shown, svc, v6};

fn sharing(name: &str, key: &str, ports: &[u16]) -> ServiceRequest {
    ServiceRequest {
        sharing_key: SharingKey::new(key),
        ports: ports.iter().map(|p| Port::tcp(*p)).collect(),
        ..svc(name)
    }
}

fn with_policy(pool_name: &str, entries: &[&str], policy: ServiceAllocation) -> super::super::Pool {
    super::super::Pool {
        allocation: Some(policy),
        ..pool(pool_name, entries)
    }
}

// --- Basic choice and stability -------------------------------------------------

#[test]
fn first_service_gets_the_lowest_address_of_the_pool() {
    let mut a = allocator(&[("p", &["198.18.0.10-198.18.0.20"])]);
    assert_eq!(assigned(&mut a, &svc("a")), ["198.18.0.10"]);
    assert_eq!(a.allocation(&key("a")).unwrap().pool, "p");
}

#[test]
fn services_get_distinct_addresses_in_ascending_order() {
    let mut a = allocator(&[("p", &["198.18.0.0/29"])]);
    let got: Vec<Vec<String>> = ["a", "b", "c"]
        .iter()
        .map(|n| assigned(&mut a, &svc(n)))
        .collect();
    assert_eq!(got, [["198.18.0.0"], ["198.18.0.1"], ["198.18.0.2"]]);
}

#[test]
fn assigning_again_returns_the_same_ips_unchanged() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let first = a.assign(&svc("a")).unwrap();
    assigned(&mut a, &svc("b"));
    a.release(&key("b"));
    assert_eq!(a.assign(&svc("a")).unwrap(), first);
    assert_eq!(a.assign(&svc("a")).unwrap(), first);
}

#[test]
fn no_pools_at_all_is_reported() {
    let mut a = Allocator::new();
    let err = a.assign(&svc("a")).unwrap_err();
    assert!(matches!(err, AllocationError::NoPools { .. }), "{err}");
    assert!(err.to_string().contains("default/a"), "{err}");
}

// --- Requested IPs -----------------------------------------------------------------

#[test]
fn requested_ip_is_honoured() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assert_eq!(
        assigned(&mut a, &requesting("a", &["198.18.0.7"])),
        ["198.18.0.7"]
    );
    // The free-space structure skips it afterwards.
    let mut others: Vec<String> = (0..15)
        .flat_map(|i| assigned(&mut a, &svc(&format!("s{i}"))))
        .collect();
    others.sort();
    assert!(!others.contains(&"198.18.0.7".to_owned()));
    assert_eq!(others.len(), 15);
}

#[test]
fn requested_ip_outside_every_pool_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let err = a.assign(&requesting("a", &["198.18.1.1"])).unwrap_err();
    assert!(
        matches!(err, AllocationError::IpOutsidePools { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("198.18.1.1"), "{err}");
    assert!(a.allocation(&key("a")).is_none());
}

#[test]
fn requested_ip_in_use_without_sharing_key_is_refused_naming_the_holder() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &requesting("a", &["198.18.0.5"]));
    let err = a.assign(&requesting("b", &["198.18.0.5"])).unwrap_err();
    match &err {
        AllocationError::IpInUse {
            holder, refusal, ..
        } => {
            assert_eq!(holder, &key("a"));
            assert_eq!(**refusal, SharingRefusal::NoSharingKey);
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("in use by default/a") && text.contains("allow-shared-ip"),
        "{text}"
    );
}

#[test]
fn requested_ip_outside_the_named_pool_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"]), ("q", &["198.18.1.0/28"])]);
    let request = ServiceRequest {
        requested_pool: Some("q".into()),
        ..requesting("a", &["198.18.0.5"])
    };
    let err = a.assign(&request).unwrap_err();
    assert!(
        matches!(&err, AllocationError::IpNotInPool { pool, .. } if pool == "q"),
        "{err}"
    );
}

#[test]
fn requested_ip_from_an_auto_assign_false_pool_is_honoured() {
    let mut a = Allocator::new();
    a.upsert_pool(super::super::Pool {
        auto_assign: false,
        ..pool("manual", &["198.18.0.0/28"])
    });
    assert_eq!(
        assigned(&mut a, &requesting("a", &["198.18.0.9"])),
        ["198.18.0.9"]
    );
}

#[test]
fn requested_ip_of_a_family_the_service_does_not_use_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28", "2001:db8::/120"])]);
    let err = a.assign(&requesting("a", &["2001:db8::5"])).unwrap_err();
    assert!(
        matches!(err, AllocationError::FamilyNotServed { .. }),
        "{err}"
    );
}

#[test]
fn two_requested_ips_of_one_family_are_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let request = ServiceRequest {
        ip_families: IpFamilies::dual(FamilyPolicy::PreferDualStack),
        ..requesting("a", &["198.18.0.1", "198.18.0.2"])
    };
    let err = a.assign(&request).unwrap_err();
    assert!(
        matches!(
            err,
            AllocationError::TooManyRequestedIps {
                family: Family::V4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn require_dual_stack_requesting_one_family_only_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28", "2001:db8::/120"])]);
    let request = ServiceRequest {
        ip_families: IpFamilies::dual(FamilyPolicy::RequireDualStack),
        ..requesting("a", &["198.18.0.1"])
    };
    let err = a.assign(&request).unwrap_err();
    assert!(
        matches!(
            err,
            AllocationError::RequestedIpsMissFamily {
                family: Family::V6,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn dual_stack_requested_ips_are_both_honoured_in_family_order() {
    let mut a = allocator(&[("p", &["198.18.0.0/28", "2001:db8::/120"])]);
    let request = ServiceRequest {
        ip_families: IpFamilies {
            policy: FamilyPolicy::RequireDualStack,
            families: vec![Family::V6, Family::V4],
        },
        ..requesting("a", &["198.18.0.3", "2001:db8::3"])
    };
    assert_eq!(assigned(&mut a, &request), ["2001:db8::3", "198.18.0.3"]);
}

#[test]
fn changing_the_requested_ip_moves_the_service_and_frees_the_old_ip() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &requesting("a", &["198.18.0.5"]));
    assert_eq!(
        assigned(&mut a, &requesting("a", &["198.18.0.6"])),
        ["198.18.0.6"]
    );
    assert!(a.holders(ip("198.18.0.5")).is_empty());
}

#[test]
fn requesting_an_ip_already_held_keeps_it() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assert_eq!(assigned(&mut a, &svc("a")), ["198.18.0.0"]);
    // The user pins the IP the Service already has: nothing moves.
    assert_eq!(
        assigned(&mut a, &requesting("a", &["198.18.0.0"])),
        ["198.18.0.0"]
    );
}

// --- autoAssign and avoidBuggyIPs --------------------------------------------------

#[test]
fn auto_assign_false_pool_is_not_used_automatically() {
    let mut a = Allocator::new();
    a.upsert_pool(super::super::Pool {
        auto_assign: false,
        ..pool("manual", &["198.18.0.0/28"])
    });
    let err = a.assign(&svc("a")).unwrap_err();
    match &err {
        AllocationError::NoPoolCouldServe { attempts, .. } => {
            assert_eq!(attempts[0].reason, AttemptFailure::NotAutoAssign);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("autoAssign false"), "{err}");
}

#[test]
fn named_pool_is_used_even_when_auto_assign_is_false() {
    let mut a = allocator(&[("auto", &["198.18.1.0/28"])]);
    a.upsert_pool(super::super::Pool {
        auto_assign: false,
        ..pool("manual", &["198.18.0.0/28"])
    });
    let request = ServiceRequest {
        requested_pool: Some("manual".into()),
        ..svc("a")
    };
    assert_eq!(assigned(&mut a, &request), ["198.18.0.0"]);
}

#[test]
fn named_pool_that_does_not_exist_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let request = ServiceRequest {
        requested_pool: Some("nope".into()),
        ..svc("a")
    };
    let err = a.assign(&request).unwrap_err();
    assert!(matches!(err, AllocationError::UnknownPool { .. }), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut a = Allocator::new();
    a.upsert_pool(super::super::Pool {
        avoid_buggy_ips: true,
        ..pool("p", &["198.18.0.254-198.18.1.1"])
    });
    assert_eq!(assigned(&mut a, &svc("a")), ["198.18.0.254"]);
    assert_eq!(assigned(&mut a, &svc("b")), ["198.18.1.1"]);
    assert!(a.assign(&svc("c")).is_err());
    let usage = a.usage("p", Family::V4).unwrap();
    assert_eq!(
        usage,
        FamilyUsage {
            total: 2,
            assigned: 2,
            available: 0
        }
    );
}

#[test]
fn requested_dot_zero_in_an_avoiding_pool_is_refused() {
    let mut a = Allocator::new();
    a.upsert_pool(super::super::Pool {
        avoid_buggy_ips: true,
        ..pool("p", &["198.18.0.0/24"])
    });
    let err = a.assign(&requesting("a", &["198.18.0.0"])).unwrap_err();
    assert!(matches!(err, AllocationError::IpAvoided { .. }), "{err}");
    assert!(err.to_string().contains("avoidBuggyIPs"), "{err}");
}

// --- Exhaustion and quarantine -----------------------------------------------------

#[test]
fn exhausted_pool_error_names_the_pool_and_the_family() {
    let mut a = allocator(&[("tiny", &["198.18.0.1"])]);
    assigned(&mut a, &svc("a"));
    let err = a.assign(&svc("b")).unwrap_err();
    assert!(
        matches!(&err, AllocationError::PoolExhausted { pool, family: Family::V4, .. } if pool == "tiny"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"tiny\"") && text.contains("IPv4") && text.contains("default/b"),
        "{text}"
    );
}

#[test]
fn released_ip_is_not_reused_while_never_used_ips_remain() {
    let mut a = allocator(&[("p", &["198.18.0.0/29"])]);
    assigned(&mut a, &svc("a"));
    assert_eq!(a.release(&key("a")), [ip("198.18.0.0")]);
    for (i, n) in ["b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        assert_eq!(assigned(&mut a, &svc(n)), [format!("198.18.0.{}", i + 1)]);
    }
    // Only now, with every never-used address gone, does the released one come back.
    assert_eq!(assigned(&mut a, &svc("i")), ["198.18.0.0"]);
}

#[test]
fn allocation_recovers_when_an_ip_frees_up_in_an_exhausted_pool() {
    let mut a = allocator(&[("p", &["198.18.0.0/31"])]);
    assigned(&mut a, &svc("a"));
    assigned(&mut a, &svc("b"));
    assert!(a.assign(&svc("c")).is_err());
    a.release(&key("a"));
    assert_eq!(assigned(&mut a, &svc("c")), ["198.18.0.0"]);
}

#[test]
fn next_pool_is_used_when_the_first_is_exhausted() {
    let mut a = allocator(&[("a-first", &["198.18.0.1"]), ("b-second", &["198.18.1.1"])]);
    assigned(&mut a, &svc("x"));
    assert_eq!(assigned(&mut a, &svc("y")), ["198.18.1.1"]);
    assert_eq!(a.allocation(&key("y")).unwrap().pool, "b-second");
}

#[test]
fn every_pool_exhausted_lists_each_pool_and_why() {
    let mut a = allocator(&[("a", &["198.18.0.1"]), ("b", &["2001:db8::1"])]);
    assigned(&mut a, &svc("x"));
    let err = a.assign(&svc("y")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("pool \"a\" has no free IPv4") && text.contains("pool \"b\" has no IPv4"),
        "{text}"
    );
}

// --- serviceAllocation -------------------------------------------------------------

#[test]
fn service_allocation_lower_priority_wins() {
    let mut a = Allocator::new();
    let low = ServiceAllocation {
        priority: Some(10),
        ..Default::default()
    };
    let high = ServiceAllocation {
        priority: Some(1),
        ..Default::default()
    };
    a.upsert_pool(with_policy("a", &["198.18.0.0/28"], low));
    a.upsert_pool(with_policy("b", &["198.18.1.0/28"], high));
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.1.0"]);
}

#[test]
fn prioritised_pools_come_before_matching_pools_without_priority() {
    let mut a = Allocator::new();
    a.upsert_pool(with_policy(
        "a",
        &["198.18.0.0/28"],
        ServiceAllocation::default(),
    ));
    let prio = ServiceAllocation {
        priority: Some(100),
        ..Default::default()
    };
    a.upsert_pool(with_policy("z", &["198.18.1.0/28"], prio));
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.1.0"]);
}

#[test]
fn matching_service_allocation_pools_come_before_plain_pools() {
    let mut a = allocator(&[("a-plain", &["198.18.0.0/28"])]);
    let only_web = ServiceAllocation {
        service_selectors: vec![LabelSelector::with_labels([("app", "web")])],
        ..Default::default()
    };
    a.upsert_pool(with_policy("z-web", &["198.18.1.0/28"], only_web));
    let web = ServiceRequest {
        labels: labels(&[("app", "web")]),
        ..svc("web")
    };
    assert_eq!(assigned(&mut a, &web), ["198.18.1.0"]);
    // A Service the policy does not select goes to the plain pool.
    assert_eq!(assigned(&mut a, &svc("db")), ["198.18.0.0"]);
}

#[test]
fn pool_serving_other_namespaces_is_skipped() {
    let mut a = Allocator::new();
    let prod = ServiceAllocation {
        namespaces: vec!["prod".into()],
        ..Default::default()
    };
    a.upsert_pool(with_policy("prod-only", &["198.18.0.0/28"], prod));
    let err = a.assign(&svc("a")).unwrap_err();
    match err {
        AllocationError::NoPoolCouldServe { attempts, .. } => {
            assert_eq!(attempts[0].reason, AttemptFailure::NotSelected);
        }
        other => panic!("{other}"),
    }
    let in_prod = ServiceRequest {
        key: ServiceKey::new("prod", "a"),
        ..svc("a")
    };
    assert_eq!(assigned(&mut a, &in_prod), ["198.18.0.0"]);
}

#[test]
fn namespace_selector_selects_by_namespace_labels() {
    let mut a = Allocator::new();
    let team = ServiceAllocation {
        namespace_selectors: vec![LabelSelector::with_labels([("team", "blue")])],
        ..Default::default()
    };
    a.upsert_pool(with_policy("blue", &["198.18.0.0/28"], team));
    let blue = ServiceRequest {
        namespace_labels: labels(&[("team", "blue")]),
        ..svc("a")
    };
    assert_eq!(assigned(&mut a, &blue), ["198.18.0.0"]);
    assert!(a.assign(&svc("b")).is_err());
}

#[test]
fn named_pool_whose_service_allocation_refuses_the_service_is_refused() {
    let mut a = Allocator::new();
    let prod = ServiceAllocation {
        namespaces: vec!["prod".into()],
        ..Default::default()
    };
    a.upsert_pool(with_policy("prod-only", &["198.18.0.0/28"], prod));
    let request = ServiceRequest {
        requested_pool: Some("prod-only".into()),
        ..svc("a")
    };
    let err = a.assign(&request).unwrap_err();
    assert!(
        matches!(err, AllocationError::PoolRefusesService { .. }),
        "{err}"
    );
    // Asking for one of its IPs is refused the same way.
    let err = a.assign(&requesting("a", &["198.18.0.3"])).unwrap_err();
    assert!(
        matches!(err, AllocationError::PoolRefusesService { .. }),
        "{err}"
    );
}

#[test]
fn ties_are_broken_by_pool_name() {
    let mut a = allocator(&[("beta", &["198.18.1.0/28"]), ("alpha", &["198.18.0.0/28"])]);
    assert_eq!(a.assign(&svc("s")).unwrap().pool, "alpha");
}

// --- Families ------------------------------------------------------------------------

#[test]
fn require_dual_stack_gets_one_ip_per_family() {
    let mut a = allocator(&[("p", &["198.18.0.0/28", "2001:db8::/64"])]);
    assert_eq!(
        assigned(&mut a, &dual("a", FamilyPolicy::RequireDualStack)),
        ["198.18.0.0", "2001:db8::"]
    );
}

#[test]
fn require_dual_stack_fails_when_the_pool_lacks_a_family() {
    let mut a = allocator(&[("v4only", &["198.18.0.0/28"])]);
    let err = a
        .assign(&dual("a", FamilyPolicy::RequireDualStack))
        .unwrap_err();
    assert!(
        matches!(&err, AllocationError::PoolLacksFamily { family: Family::V6, pool, .. } if pool == "v4only"),
        "{err}"
    );
    assert!(a.allocation(&key("a")).is_none(), "all or nothing");
    assert_eq!(a.usage("v4only", Family::V4).unwrap().assigned, 0);
}

#[test]
fn prefer_dual_stack_takes_one_family_when_the_pool_offers_one() {
    let mut a = allocator(&[("v4only", &["198.18.0.0/28"])]);
    assert_eq!(
        assigned(&mut a, &dual("a", FamilyPolicy::PreferDualStack)),
        ["198.18.0.0"]
    );
}

#[test]
fn prefer_dual_stack_adds_the_missing_family_later_without_moving_the_first() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assert_eq!(
        assigned(&mut a, &dual("a", FamilyPolicy::PreferDualStack)),
        ["198.18.0.0"]
    );
    assert_eq!(a.incomplete().collect::<Vec<_>>(), [&key("a")]);
    assert!(
        a.upsert_pool(pool("p", &["198.18.0.0/28", "2001:db8::/120"]))
            .is_empty()
    );
    assert_eq!(
        assigned(&mut a, &dual("a", FamilyPolicy::PreferDualStack)),
        ["198.18.0.0", "2001:db8::"]
    );
    assert_eq!(a.incomplete().count(), 0);
}

#[test]
fn prefer_dual_stack_chooses_a_pool_offering_both_families() {
    let mut a = allocator(&[
        ("a-v4", &["198.18.0.0/28"]),
        ("b-dual", &["198.18.1.0/28", "2001:db8::/120"]),
    ]);
    let got = a.assign(&dual("s", FamilyPolicy::PreferDualStack)).unwrap();
    assert_eq!(got.pool, "b-dual");
    assert_eq!(shown(&got.ips), ["198.18.1.0", "2001:db8::"]);
}

#[test]
fn single_stack_ipv6_gets_an_ipv6_address() {
    let mut a = allocator(&[("p", &["198.18.0.0/28", "2001:db8::/120"])]);
    assert_eq!(assigned(&mut a, &v6("a")), ["2001:db8::"]);
}

#[test]
fn single_stack_family_missing_from_the_pool_is_refused() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let err = a.assign(&v6("a")).unwrap_err();
    assert!(
        matches!(
            err,
            AllocationError::PoolLacksFamily {
                family: Family::V6,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn switching_to_single_stack_drops_only_the_extra_family() {
    let mut a = allocator(&[("p", &["198.18.0.0/28", "2001:db8::/120"])]);
    assigned(&mut a, &dual("a", FamilyPolicy::RequireDualStack));
    assert_eq!(assigned(&mut a, &svc("a")), ["198.18.0.0"]);
    assert!(a.holders(ip("2001:db8::")).is_empty());
}

// --- Sharing -----------------------------------------------------------------------

#[test]
fn same_key_and_disjoint_ports_share_the_ip() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assert_eq!(
        assigned(&mut a, &sharing("http", "k", &[80])),
        ["198.18.0.0"]
    );
    // Without asking for the IP, the second Service joins the shared one.
    assert_eq!(
        assigned(&mut a, &sharing("https", "k", &[443])),
        ["198.18.0.0"]
    );
    assert_eq!(a.holders(ip("198.18.0.0")).len(), 2);
    assert_eq!(a.usage("p", Family::V4).unwrap().assigned, 1);
}

#[test]
fn overlapping_ports_get_a_different_ip_or_a_refusal_when_requested() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &sharing("one", "k", &[80]));
    assert_eq!(
        assigned(&mut a, &sharing("two", "k", &[80])),
        ["198.18.0.1"]
    );
    let pinned = ServiceRequest {
        requested_ips: vec![ip("198.18.0.0")],
        ..sharing("three", "k", &[80, 8080])
    };
    let err = a.assign(&pinned).unwrap_err();
    assert!(err.to_string().contains("TCP/80"), "{err}");
}

#[test]
fn different_sharing_keys_do_not_share() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &sharing("one", "k1", &[80]));
    let pinned = ServiceRequest {
        requested_ips: vec![ip("198.18.0.0")],
        ..sharing("two", "k2", &[443])
    };
    let err = a.assign(&pinned).unwrap_err();
    assert!(
        matches!(&err, AllocationError::IpInUse { refusal, .. } if matches!(**refusal, SharingRefusal::DifferentKeys { .. })),
        "{err}"
    );
}

#[test]
fn local_services_share_only_with_the_same_selector() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let local = |name: &str, app: &str, port: u16| ServiceRequest {
        traffic_policy: TrafficPolicy::Local {
            selector: labels(&[("app", app)]),
        },
        ..sharing(name, "k", &[port])
    };
    assert_eq!(assigned(&mut a, &local("a", "web", 80)), ["198.18.0.0"]);
    assert_eq!(assigned(&mut a, &local("b", "web", 443)), ["198.18.0.0"]);
    assert_eq!(assigned(&mut a, &local("c", "db", 5432)), ["198.18.0.1"]);
    // Cluster and Local do not mix either.
    assert_eq!(assigned(&mut a, &sharing("d", "k", &[22])), ["198.18.0.2"]);
}

#[test]
fn a_shared_ip_stays_assigned_until_its_last_user_releases_it() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &sharing("one", "k", &[80]));
    assigned(&mut a, &sharing("two", "k", &[443]));
    assert!(a.release(&key("one")).is_empty(), "still held by two");
    assert_eq!(a.holders(ip("198.18.0.0")), [key("two")]);
    assert_eq!(a.release(&key("two")), [ip("198.18.0.0")]);
    assert_eq!(a.usage("p", Family::V4).unwrap().assigned, 0);
}

#[test]
fn breaking_sharing_moves_only_the_service_that_changed() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &sharing("one", "k", &[80]));
    assigned(&mut a, &sharing("two", "k", &[443]));
    // "two" now also exposes port 80: it must leave, "one" keeps the IP.
    assert_eq!(
        assigned(&mut a, &sharing("two", "k", &[80, 443])),
        ["198.18.0.1"]
    );
    assert_eq!(
        shown(&a.allocation(&key("one")).unwrap().ips),
        ["198.18.0.0"]
    );
}

// --- Pools changing ------------------------------------------------------------------

#[test]
fn overlapping_pools_are_marked_and_not_used_for_new_allocations() {
    let mut a = allocator(&[("a", &["198.18.0.0/28"]), ("c", &["198.18.2.0/28"])]);
    a.upsert_pool(pool("b", &["198.18.0.8-198.18.0.20"]));
    match a.pool_health("a").unwrap() {
        PoolHealth::Overlapping { with } => {
            assert_eq!(
                with.get("b").map(ToString::to_string).as_deref(),
                Some("198.18.0.8/29")
            );
        }
        PoolHealth::Ready => panic!("a overlaps b"),
    }
    assert_eq!(a.pool_health("c"), Some(PoolHealth::Ready));
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.2.0"]);
    let named = ServiceRequest {
        requested_pool: Some("a".into()),
        ..svc("t")
    };
    let err = a.assign(&named).unwrap_err();
    assert!(
        matches!(&err, AllocationError::PoolOverlapping { other, .. } if other == "b"),
        "{err}"
    );
}

#[test]
fn services_keep_their_ips_when_their_pool_starts_overlapping() {
    let mut a = allocator(&[("a", &["198.18.0.0/28"])]);
    let before = a.assign(&svc("s")).unwrap();
    assert!(a.upsert_pool(pool("b", &["198.18.0.0/24"])).is_empty());
    assert_eq!(a.assign(&svc("s")).unwrap(), before);
    // Both pools count the held address; neither could hand it out again.
    assert_eq!(a.usage("b", Family::V4).unwrap().assigned, 1);
}

#[test]
fn deleting_a_pool_returns_exactly_its_services() {
    let mut a = allocator(&[("a", &["198.18.0.0/28"]), ("b", &["198.18.1.0/28"])]);
    let in_a = ServiceRequest {
        requested_pool: Some("a".into()),
        ..svc("x")
    };
    assigned(&mut a, &in_a);
    let in_b = ServiceRequest {
        requested_pool: Some("b".into()),
        ..svc("y")
    };
    assigned(&mut a, &in_b);
    assert_eq!(a.remove_pool("a"), [key("x")]);
    assert!(a.allocation(&key("x")).is_none());
    assert_eq!(shown(&a.allocation(&key("y")).unwrap().ips), ["198.18.1.0"]);
    let err = a.assign(&in_a).unwrap_err();
    assert!(matches!(err, AllocationError::UnknownPool { .. }), "{err}");
}

#[test]
fn shrinking_a_pool_moves_only_services_outside_the_new_range() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let names = ["a", "b", "c", "d"];
    for n in names {
        assigned(&mut a, &svc(n));
    }
    // Keep .0-.1 and add fresh space elsewhere.
    let moved = a.upsert_pool(pool("p", &["198.18.0.0/31", "198.18.5.0/30"]));
    assert_eq!(moved, [key("c"), key("d")]);
    assert_eq!(assigned(&mut a, &svc("a")), ["198.18.0.0"]);
    assert_eq!(assigned(&mut a, &svc("b")), ["198.18.0.1"]);
    assert_eq!(assigned(&mut a, &svc("c")), ["198.18.5.0"]);
    assert_eq!(assigned(&mut a, &svc("d")), ["198.18.5.1"]);
}

#[test]
fn ipv6_slash_48_pool_counts_exactly() {
    let mut a = allocator(&[("big", &["2001:db8::/48"])]);
    assigned(&mut a, &v6("a"));
    let usage = a.usage("big", Family::V6).unwrap();
    assert_eq!(usage.total, 1u128 << 80);
    assert_eq!(usage.assigned, 1);
    assert_eq!(usage.available, (1u128 << 80) - 1);
}

// --- Restart -----------------------------------------------------------------------

#[test]
fn restore_keeps_valid_ips_and_reports_invalid_ones() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let request = ServiceRequest {
        ip_families: IpFamilies::dual(FamilyPolicy::PreferDualStack),
        ..svc("a")
    };
    let restored = a.restore(
        &request,
        &[ip("198.18.0.9"), ip("2001:db8::1"), ip("198.18.0.10")],
    );
    assert_eq!(shown(&restored.allocation.unwrap().ips), ["198.18.0.9"]);
    assert_eq!(restored.rejected.len(), 2);
    assert!(matches!(
        restored.rejected[0],
        AllocationError::IpOutsidePools { .. }
    ));
    assert!(matches!(
        restored.rejected[1],
        AllocationError::ExtraIp { .. }
    ));
}

#[test]
fn restoring_then_assigning_moves_nothing() {
    let pools: &[(&str, &[&str])] = &[("p", &["198.18.0.0/28", "2001:db8::/120"])];
    let mut before = allocator(pools);
    let requests: Vec<ServiceRequest> = (0..5)
        .map(|i| dual(&format!("s{i}"), FamilyPolicy::RequireDualStack))
        .collect();
    for r in &requests {
        assigned(&mut before, r);
    }
    before.release(&key("s1"));
    let mut after = allocator(pools);
    for (k, alloc) in before.allocations() {
        let r = requests.iter().find(|r| &r.key == k).unwrap();
        let restored = after.restore(r, &alloc.ips);
        assert!(restored.rejected.is_empty());
    }
    for r in requests.iter().filter(|r| r.key != key("s1")) {
        assert_eq!(after.assign(r).unwrap(), before.assign(r).unwrap());
    }
}

#[test]
fn current_ips_are_kept_for_a_service_seen_for_the_first_time() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    let request = ServiceRequest {
        current_ips: vec![ip("198.18.0.12")],
        ..svc("a")
    };
    assert_eq!(assigned(&mut a, &request), ["198.18.0.12"]);
}

#[test]
fn restore_attributes_an_ip_to_the_pool_named_in_the_output_annotation() {
    let mut a = allocator(&[("a", &["198.18.0.0/28"]), ("b", &["198.18.0.0/24"])]);
    let request = ServiceRequest {
        current_pool: Some("b".into()),
        ..svc("s")
    };
    let restored = a.restore(&request, &[ip("198.18.0.3")]);
    assert_eq!(restored.allocation.unwrap().pool, "b");
}

#[test]
fn restore_refuses_an_ip_another_service_holds_without_sharing() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assert!(
        a.restore(&svc("first"), &[ip("198.18.0.4")])
            .rejected
            .is_empty()
    );
    let restored = a.restore(&svc("second"), &[ip("198.18.0.4")]);
    assert!(restored.allocation.is_none());
    assert!(matches!(
        restored.rejected[0],
        AllocationError::IpInUse { .. }
    ));
}

#[test]
fn a_missing_family_is_not_added_from_a_pool_that_now_overlaps_another() {
    let mut a = allocator(&[("p", &["198.18.0.0/28"])]);
    assigned(&mut a, &dual("s", FamilyPolicy::PreferDualStack));
    a.upsert_pool(pool("p", &["198.18.0.0/28", "2001:db8::/120"]));
    a.upsert_pool(pool("q", &["2001:db8::/124"]));
    // The IPv4 address stays; no IPv6 comes from an overlapping pool.
    assert_eq!(
        assigned(&mut a, &dual("s", FamilyPolicy::PreferDualStack)),
        ["198.18.0.0"]
    );
    let err = a
        .assign(&dual("s", FamilyPolicy::RequireDualStack))
        .unwrap_err();
    assert!(
        matches!(&err, AllocationError::PoolOverlapping { other, .. } if other == "q"),
        "{err}"
    );
    assert_eq!(shown(&a.allocation(&key("s")).unwrap().ips), ["198.18.0.0"]);
}

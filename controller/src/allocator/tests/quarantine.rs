//! The quarantine across pool edits and restarts.

use super::super::{Allocator, FamilyPolicy, FreezeReason, IpRange};
use super::{allocator, assigned, dual, ip, key, pool, shown, svc};

/// A restart: the same pools, the Services restored from their allocations, then each
/// pool's quarantine restored from `lists`.
fn restarted(
    from: &Allocator,
    pools: &[(&str, &[&str])],
    lists: &[(&str, Vec<String>)],
) -> Allocator {
    let mut b = allocator(pools);
    for (k, alloc) in from.allocations() {
        let request = super::super::ServiceRequest {
            current_pool: Some(alloc.pool.clone()),
            ..svc(&k.name)
        };
        assert!(b.restore(&request, &alloc.ips).rejected.is_empty());
    }
    for (name, list) in lists {
        b.restore_quarantine(name, list.iter().map(|s| ip(s)));
    }
    b
}

#[test]
fn quarantine_lists_released_ips_oldest_first_both_families_by_release() {
    let pools: &[(&str, &[&str])] = &[("p", &["198.18.0.0/29", "2001:db8::/125"])];
    let mut a = allocator(pools);
    for n in ["a", "b", "c"] {
        assigned(&mut a, &dual(n, FamilyPolicy::RequireDualStack));
    }
    a.release(&key("b"));
    a.release(&key("a"));
    assert_eq!(
        shown(&a.quarantine("p")),
        ["198.18.0.1", "2001:db8::1", "198.18.0.0", "2001:db8::"]
    );
    assigned(&mut a, &svc("x"));
    assert_eq!(a.quarantine("p").len(), 4, "never-used addresses go first");
    assert!(a.quarantine("nope").is_empty());
}

#[test]
fn a_restart_without_the_quarantine_reuses_the_just_released_ip_and_with_it_does_not() {
    let pools: &[(&str, &[&str])] = &[("p", &["198.18.0.0/29"])];
    let mut a = allocator(pools);
    for n in ["a", "b", "c"] {
        assigned(&mut a, &svc(n));
    }
    a.release(&key("a"));
    let list = shown(&a.quarantine("p"));
    assert_eq!(list, ["198.18.0.0"]);

    let mut forgetful = restarted(&a, pools, &[]);
    assert_eq!(assigned(&mut forgetful, &svc("d")), ["198.18.0.0"]);

    let mut b = restarted(&a, pools, &[("p", list)]);
    assert_eq!(b.quarantine("p"), a.quarantine("p"));
    assert_eq!(
        b.usage("p", ferrolb_address::Family::V4),
        a.usage("p", ferrolb_address::Family::V4)
    );
    for n in ["d", "e", "f", "g", "h"] {
        assert_eq!(assigned(&mut b, &svc(n)), assigned(&mut a, &svc(n)));
    }
    assert_eq!(assigned(&mut b, &svc("i")), ["198.18.0.0"], "last of all");
}

#[test]
fn restore_quarantine_ignores_held_foreign_and_unknown_entries() {
    let mut a = allocator(&[("p", &["198.18.0.0/29"]), ("q", &["198.18.1.0/29"])]);
    assigned(&mut a, &svc("a"));
    let list = [
        "198.18.0.0",
        "198.18.0.5",
        "198.18.1.3",
        "10.0.0.1",
        "198.18.0.2",
    ];
    assert_eq!(a.restore_quarantine("p", list.iter().map(|s| ip(s))), 2);
    assert_eq!(shown(&a.quarantine("p")), ["198.18.0.5", "198.18.0.2"]);
    assert!(a.quarantine("q").is_empty(), "q's address was listed for p");
    assert_eq!(a.restore_quarantine("gone", [ip("198.18.0.1")]), 0);
    assert_eq!(
        a.usage("p", ferrolb_address::Family::V4).unwrap().available,
        7
    );
}

#[test]
fn a_restored_ip_is_quarantined_in_every_pool_offering_it() {
    let mut a = allocator(&[("p", &["198.18.0.0/29"])]);
    a.upsert_pool(pool("wide", &["198.18.0.0/28"]));
    a.restore_quarantine("p", [ip("198.18.0.3")]);
    assert_eq!(shown(&a.quarantine("wide")), ["198.18.0.3"]);
    // Once the overlap is gone, the wide pool still keeps it for last.
    a.remove_pool("p");
    for i in (0..16).filter(|i| *i != 3) {
        assert_eq!(
            assigned(&mut a, &svc(&format!("s{i}"))),
            [format!("198.18.0.{i}")]
        );
    }
    assert_eq!(assigned(&mut a, &svc("last")), ["198.18.0.3"]);
}

#[test]
fn overlapping_pools_keep_their_recorded_orders_whichever_list_comes_first() {
    // p1 offers x=.1, y=.2 and w=.5; p2 offers z=.0, x and y. Released z, x, y, w.
    let pools: &[(&str, &[&str])] = &[
        ("p1", &["198.18.0.1-198.18.0.2", "198.18.0.5"]),
        ("p2", &["198.18.0.0-198.18.0.2"]),
    ];
    let p1 = || {
        (
            "p1",
            vec![
                "198.18.0.1".to_owned(),
                "198.18.0.2".into(),
                "198.18.0.5".into(),
            ],
        )
    };
    let p2 = || {
        (
            "p2",
            vec![
                "198.18.0.0".to_owned(),
                "198.18.0.1".into(),
                "198.18.0.2".into(),
            ],
        )
    };
    for lists in [[p1(), p2()], [p2(), p1()]] {
        let mut b = allocator(pools);
        for (name, list) in &lists {
            b.restore_quarantine(name, list.iter().map(|s| ip(s)));
        }
        assert_eq!(shown(&b.quarantine("p1")), p1().1);
        assert_eq!(shown(&b.quarantine("p2")), p2().1);
    }
}

#[test]
fn quarantine_survives_a_pool_edit_and_a_freeze() {
    let mut a = allocator(&[("p", &["198.18.0.0/29"])]);
    for n in ["a", "b", "c"] {
        assigned(&mut a, &svc(n));
    }
    a.release(&key("b"));
    a.release(&key("a"));
    a.upsert_pool(pool("p", &["198.18.0.0/28"]));
    assert!(a.set_frozen("p", Some(FreezeReason::Invalid)));
    a.upsert_pool(pool("p", &["198.18.0.1-198.18.0.15"]));
    assert!(a.set_frozen("p", None));
    assert_eq!(
        shown(&a.quarantine("p")),
        ["198.18.0.1"],
        ".0 left the pool"
    );
    for i in 3..16 {
        assert_eq!(
            assigned(&mut a, &svc(&format!("s{i}"))),
            [format!("198.18.0.{i}")]
        );
    }
    assert_eq!(assigned(&mut a, &svc("last")), ["198.18.0.1"]);
}

#[test]
fn a_new_pool_over_quarantined_ips_takes_them_in_their_order() {
    let mut a = allocator(&[("p", &["198.18.0.0/30"])]);
    for n in ["a", "b"] {
        assigned(&mut a, &svc(n));
    }
    a.release(&key("b"));
    a.release(&key("a"));
    a.upsert_pool(pool("q", &["198.18.0.0/29"]));
    assert_eq!(shown(&a.quarantine("q")), ["198.18.0.1", "198.18.0.0"]);
    a.remove_pool("p");
    let got: Vec<Vec<String>> = (0..8)
        .map(|i| assigned(&mut a, &svc(&format!("s{i}"))))
        .collect();
    assert_eq!(got[6..], [["198.18.0.1"], ["198.18.0.0"]]);
}

#[test]
fn reserved_quarantined_ips_are_listed_and_come_back_in_place() {
    let pools: &[(&str, &[&str])] = &[("p", &["198.18.0.0/30"])];
    let mut a = allocator(pools);
    for n in ["a", "b", "c"] {
        assigned(&mut a, &svc(n));
    }
    a.release(&key("a"));
    a.release(&key("b"));
    let node = IpRange::single(ip("198.18.0.0"));
    a.set_reserved(vec![("InternalIP of node n1".into(), node)]);
    assert_eq!(shown(&a.quarantine("p")), ["198.18.0.0", "198.18.0.1"]);
    assert_eq!(assigned(&mut a, &svc("d")), ["198.18.0.3"]);
    assert_eq!(
        assigned(&mut a, &svc("e")),
        ["198.18.0.1"],
        "never the reserved .0"
    );
    assert!(a.assign(&svc("f")).is_err());
    a.set_reserved(Vec::new());
    assert_eq!(assigned(&mut a, &svc("f")), ["198.18.0.0"]);
}

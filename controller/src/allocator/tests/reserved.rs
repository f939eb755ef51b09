//! The cluster's own networks: never handed out, kept by those who hold them.

use ferrolb_address::{Family, IpRange};

use super::super::{AllocationError, Port, ServiceRequest, SharingKey};
use super::{allocator, assigned, ip, key, requesting, svc, v6};

fn range(first: &str, last: &str) -> IpRange {
    IpRange::new(ip(first), ip(last)).unwrap()
}

fn counts(a: &super::super::Allocator, pool: &str, family: Family) -> (u128, u128, u128, u128) {
    let u = a.usage(pool, family).unwrap();
    let r = a.reserved_unassigned(pool, family).unwrap();
    assert_eq!(u.total, u.assigned + u.available + r, "{pool} {family}");
    (u.total, u.assigned, u.available, r)
}

#[test]
fn reserved_addresses_are_never_handed_out_nor_counted_available() {
    let mut a = allocator(&[("p", &["198.18.0.0/29"])]);
    let cidr = range("198.18.0.0", "198.18.0.2");
    a.set_reserved(vec![("ServiceCIDR kubernetes".into(), cidr)]);
    assert_eq!(counts(&a, "p", Family::V4), (8, 0, 5, 3));
    for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        assert_eq!(assigned(&mut a, &svc(n)), [format!("198.18.0.{}", i + 3)]);
    }
    let err = a.assign(&svc("f")).unwrap_err();
    assert!(
        matches!(err, AllocationError::PoolExhausted { .. }),
        "{err}"
    );
    a.set_reserved(Vec::new());
    assert_eq!(assigned(&mut a, &svc("f")), ["198.18.0.0"]);
    assert_eq!(counts(&a, "p", Family::V4), (8, 6, 2, 0));
}

#[test]
fn a_requested_reserved_ip_is_refused_naming_the_range() {
    let mut a = allocator(&[("p", &["198.18.0.0/24"])]);
    let node = IpRange::single(ip("198.18.0.10"));
    a.set_reserved(vec![("InternalIP of node node2".into(), node)]);
    let err = a.assign(&requesting("s", &["198.18.0.10"])).unwrap_err();
    assert_eq!(
        err,
        AllocationError::IpReserved {
            service: key("s"),
            ip: ip("198.18.0.10"),
            label: "InternalIP of node node2".into(),
            range: Box::new(node),
        }
    );
    assert_eq!(err.reason(), "ip_reserved");
    assert_eq!(
        err.to_string(),
        "IP 198.18.0.10 for default/s lies in InternalIP of node node2 (198.18.0.10), a network of the cluster itself, and is never handed out; request another IP"
    );
}

#[test]
fn a_service_holding_a_reserved_ip_keeps_it_and_a_restart_restores_it() {
    let mut a = allocator(&[("p", &["198.18.0.0/30"])]);
    let held = a.assign(&svc("s")).unwrap();
    let reserved = vec![(
        "podCIDR of node n1".to_owned(),
        range("198.18.0.0", "198.18.0.1"),
    )];
    a.set_reserved(reserved.clone());
    assert_eq!(a.assign(&svc("s")).unwrap(), held, "stability first");
    assert_eq!(counts(&a, "p", Family::V4), (4, 1, 2, 1));

    let mut b = allocator(&[("p", &["198.18.0.0/30"])]);
    b.set_reserved(reserved);
    let restored = b.restore(&svc("s"), &held.ips);
    assert!(restored.rejected.is_empty());
    assert_eq!(restored.allocation, Some(held));
    b.release(&key("s"));
    assert_eq!(counts(&b, "p", Family::V4), (4, 0, 2, 2));
    assert_eq!(assigned(&mut b, &svc("t")), ["198.18.0.2"]);
    assert_eq!(assigned(&mut b, &svc("u")), ["198.18.0.3"]);
    assert!(
        b.assign(&svc("v")).is_err(),
        "the released reserved IP stays out"
    );
}

#[test]
fn a_sharing_key_never_joins_a_reserved_ip() {
    let mut a = allocator(&[("p", &["198.18.0.0/30"])]);
    let sharing = |name: &str, port: u16| ServiceRequest {
        sharing_key: SharingKey::new("k"),
        ports: vec![Port::tcp(port)],
        ..svc(name)
    };
    assert_eq!(assigned(&mut a, &sharing("one", 80)), ["198.18.0.0"]);
    a.set_reserved(vec![(
        "ServiceCIDR kubernetes".into(),
        range("198.18.0.0", "198.18.0.0"),
    )]);
    assert_eq!(assigned(&mut a, &sharing("two", 443)), ["198.18.0.1"]);
}

#[test]
fn reserved_overlaps_name_each_label_once_with_its_lowest_common_range() {
    let mut a = allocator(&[
        ("p", &["198.18.0.0/24", "2001:db8::/64"]),
        ("q", &["198.19.0.0/24"]),
    ]);
    a.set_reserved(vec![
        (
            "podCIDR of node n1".into(),
            range("2001:db8::", "2001:db8::ffff"),
        ),
        (
            "podCIDR of node n1".into(),
            range("198.18.0.64", "198.18.0.127"),
        ),
        (
            "ServiceCIDR kubernetes".into(),
            range("198.18.0.128", "198.18.1.255"),
        ),
        (
            "InternalIP of node n2".into(),
            IpRange::single(ip("10.0.0.1")),
        ),
    ]);
    let shown: Vec<(String, String)> = a
        .reserved_overlaps("p")
        .into_iter()
        .map(|(l, r)| (l, r.to_string()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "ServiceCIDR kubernetes".to_owned(),
                "198.18.0.128/25".to_owned()
            ),
            ("podCIDR of node n1".to_owned(), "198.18.0.64/26".to_owned()),
        ]
    );
    assert!(a.reserved_overlaps("q").is_empty());
    assert!(a.reserved_overlaps("unknown").is_empty());
}

#[test]
fn a_huge_pool_around_a_reserved_block_stays_exact_and_cheap() {
    let mut a = allocator(&[("big", &["2001:db8::/48"])]);
    let block = range("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff");
    a.set_reserved(vec![("ServiceCIDR kubernetes".into(), block)]);
    assert_eq!(assigned(&mut a, &v6("s")), ["2001:db8:0:1::"]);
    let (total, assigned, available, reserved) = counts(&a, "big", Family::V6);
    assert_eq!((total, assigned, reserved), (1 << 80, 1, 1 << 64));
    assert_eq!(available, (1 << 80) - (1 << 64) - 1);
}

#[test]
fn a_pool_created_or_edited_later_carves_out_the_reserved_ranges() {
    let mut a = allocator(&[]);
    a.set_reserved(vec![(
        "InternalIP of node n1".into(),
        IpRange::single(ip("198.18.0.0")),
    )]);
    a.upsert_pool(super::pool("p", &["198.18.0.0/31"]));
    assert_eq!(assigned(&mut a, &svc("s")), ["198.18.0.1"]);
    a.upsert_pool(super::pool("p", &["198.18.0.0/30"]));
    assert_eq!(assigned(&mut a, &svc("t")), ["198.18.0.2"]);
    assert_eq!(counts(&a, "p", Family::V4), (4, 2, 1, 1));
}

//! Allocator benchmarks: SPEC §9 asks for 10,000 dual-stack Services in at most
//! 100 ms, and for a /48 pool to cost the same as a /28.
//!
//! Run: `cargo bench -p ferrolb-controller --bench allocator -- --warm-up-time 1 --measurement-time 3`

// Benchmark set-up may panic: a broken fixture should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ferrolb_address::{AddressSet, Family};
use ferrolb_controller::allocator::{
    Allocation, Allocator, FamilyPolicy, IpFamilies, Pool, Port, ServiceKey, ServiceRequest,
};

const SERVICES: usize = 10_000;

fn allocator_with(entries: &[&str]) -> Allocator {
    let mut a = Allocator::new();
    let set = AddressSet::parse(entries.iter().copied()).unwrap();
    a.upsert_pool(Pool::new("pool", set));
    a
}

fn requests(n: usize, families: &IpFamilies) -> Vec<ServiceRequest> {
    (0..n)
        .map(|i| ServiceRequest {
            ports: vec![Port::tcp(80), Port::tcp(443)],
            ip_families: families.clone(),
            ..ServiceRequest::new(ServiceKey::new(format!("ns{}", i % 50), format!("svc-{i}")))
        })
        .collect()
}

fn assign_all(a: &mut Allocator, requests: &[ServiceRequest]) {
    for r in requests {
        black_box(a.assign(r).unwrap());
    }
}

fn allocate(c: &mut Criterion) {
    let dual = IpFamilies::dual(FamilyPolicy::RequireDualStack);
    let reqs = requests(SERVICES, &dual);
    let mut group = c.benchmark_group("allocate_10k_dual_stack");
    group.sample_size(10);
    for (name, entries) in [
        ("v4_16_v6_64", ["198.18.0.0/16", "2001:db8::/64"]),
        ("v4_16_v6_48", ["198.18.0.0/16", "2001:db8::/48"]),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || allocator_with(&entries),
                |mut a| {
                    assign_all(&mut a, &reqs);
                    a
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// The same 16 allocations from a pool of exactly 16 addresses and from a /48 (and
/// from a /48 with 10,000 addresses already held): the cost must not grow with size.
fn pool_size_independence(c: &mut Criterion) {
    let v4 = requests(16, &IpFamilies::single(Family::V4));
    let v6 = requests(16, &IpFamilies::single(Family::V6));
    let mut group = c.benchmark_group("allocate_16_single_stack");
    for (name, entries, reqs) in [
        ("v4_28", "198.18.0.0/28", &v4),
        ("v6_124", "2001:db8::/124", &v6),
        ("v6_48", "2001:db8::/48", &v6),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || allocator_with(&[entries]),
                |mut a| {
                    assign_all(&mut a, reqs);
                    a
                },
                BatchSize::SmallInput,
            );
        });
    }
    // 16 more from a /48 that already holds 10,000 Services, half of them released
    // (a fragmented, quarantined free space).
    let background = requests(SERVICES, &IpFamilies::single(Family::V6));
    let mut busy = allocator_with(&["2001:db8::/48"]);
    assign_all(&mut busy, &background);
    for r in background.iter().step_by(2) {
        busy.release(&r.key);
    }
    let extra: Vec<ServiceRequest> = requests(16, &IpFamilies::single(Family::V6))
        .into_iter()
        .map(|r| ServiceRequest {
            key: ServiceKey::new("extra", r.key.name.clone()),
            ..r
        })
        .collect();
    group.bench_function("v6_48_after_10k_and_5k_released", |b| {
        b.iter(|| {
            assign_all(&mut busy, &extra);
            for r in &extra {
                busy.release(&r.key);
            }
        });
    });
    group.finish();
}

fn restore(c: &mut Criterion) {
    let dual = IpFamilies::dual(FamilyPolicy::RequireDualStack);
    let reqs = requests(SERVICES, &dual);
    let entries = ["198.18.0.0/16", "2001:db8::/64"];
    let mut source = allocator_with(&entries);
    assign_all(&mut source, &reqs);
    let existing: Vec<(ServiceRequest, Allocation)> = reqs
        .iter()
        .map(|r| {
            let alloc = source.allocation(&r.key).cloned().unwrap();
            let request = ServiceRequest {
                current_pool: Some(alloc.pool.clone()),
                ..r.clone()
            };
            (request, alloc)
        })
        .collect();
    let mut group = c.benchmark_group("restore_10k_dual_stack");
    group.sample_size(10);
    group.bench_function("v4_16_v6_64", |b| {
        b.iter_batched(
            || allocator_with(&entries),
            |mut a| {
                for (request, alloc) in &existing {
                    let restored = a.restore(request, &alloc.ips);
                    assert!(restored.rejected.is_empty());
                }
                a
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, allocate, pool_size_independence, restore);
criterion_main!(benches);

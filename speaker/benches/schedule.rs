//! Cost of a takeover of 1,000 IPs in the schedule: every take_over plus the
//! `due` call that releases their first announcements.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ferrolb_speaker::schedule::Schedule;

fn takeover_of_1000(c: &mut Criterion) {
    let ips: Vec<IpAddr> = (0..1000_u32)
        .map(|n| IpAddr::V4(Ipv4Addr::from(0xc612_0000 + n)))
        .collect();
    c.bench_function("schedule_takeover_1000", |b| {
        b.iter_batched(
            Schedule::default,
            |mut schedule| {
                let now = Instant::now();
                for ip in &ips {
                    schedule.take_over(*ip, now);
                }
                black_box(schedule.due(now))
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, takeover_of_1000);
criterion_main!(benches);

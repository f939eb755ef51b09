//! Cost of answering one ARP request: decode the frame, build the reply.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::packet::arp::{ArpRequest, build_reply};

fn decode_and_reply(c: &mut Criterion) {
    let request = ArpRequest {
        eth_destination: MacAddr::broadcast(),
        eth_source: MacAddr::new(2, 0, 0, 0, 0, 1),
        sender_mac: MacAddr::new(2, 0, 0, 0, 0, 1),
        sender_ip: Ipv4Addr::new(198, 18, 0, 1),
        target_mac: MacAddr::zero(),
        target_ip: Ipv4Addr::new(198, 18, 0, 200),
    };
    let frame = request.encode();
    let our_mac = MacAddr::new(2, 0, 0, 0, 0, 2);
    c.bench_function("arp_decode_and_reply", |b| {
        b.iter(|| match ArpRequest::decode(black_box(&frame)) {
            Ok(request) => Some(build_reply(&request, our_mac)),
            Err(_) => None,
        });
    });
}

criterion_group!(benches, decode_and_reply);
criterion_main!(benches);

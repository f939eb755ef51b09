//! Arbitrary bytes as a received Ethernet frame: decoding never panics, and
//! whatever decodes re-encodes to the same bytes and can be answered.

#![no_main]

use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::packet::arp::{ArpRequest, MIN_FRAME_LEN, build_reply};
use libfuzzer_sys::fuzz_target;

/// Ethernet header plus an Ethernet/IPv4 ARP packet.
const ARP_FRAME_LEN: usize = 42;

fuzz_target!(|frame: &[u8]| {
    if let Ok(request) = ArpRequest::decode(frame) {
        let encoded = request.encode();
        assert_eq!(encoded.get(..ARP_FRAME_LEN), frame.get(..ARP_FRAME_LEN));
        assert_eq!(ArpRequest::decode(&encoded), Ok(request));
        let reply = build_reply(&request, MacAddr::new(0x02, 0, 0, 0, 0, 0x02));
        assert_eq!(reply.len(), MIN_FRAME_LEN);
    }
});

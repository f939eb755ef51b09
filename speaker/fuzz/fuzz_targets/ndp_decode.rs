//! Arbitrary bytes as a received neighbor solicitation (the first 16 bytes
//! are the IPv6 source, the rest the ICMPv6 message): decoding never panics,
//! and whatever decodes re-encodes to an equal solicitation and can be
//! answered.

#![no_main]

use std::net::Ipv6Addr;

use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::packet::ndp::{ADVERTISEMENT_LEN, NeighborSolicitation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (source, message) = match data.split_first_chunk::<16>() {
        Some((source, message)) => (Ipv6Addr::from(*source), message),
        None => (Ipv6Addr::UNSPECIFIED, data),
    };
    if let Ok(solicitation) = NeighborSolicitation::decode(message, source) {
        assert_eq!(
            NeighborSolicitation::decode(&solicitation.encode(), source),
            Ok(solicitation)
        );
        let reply = solicitation.reply(MacAddr::new(0x02, 0, 0, 0, 0, 0x02));
        assert_eq!(reply.message.len(), ADVERTISEMENT_LEN);
    }
});

//! ARP over Ethernet for IPv4 (RFC 826): decoding requests, building replies
//! and gratuitous ARP.
//!
//! Frames are complete Ethernet II frames without FCS, as read from and
//! written to an `AF_PACKET`/`SOCK_RAW` socket. Built frames are padded to the
//! 60-byte Ethernet minimum because not every driver pads short frames
//! (veth does not) and some switches drop runts.

use std::net::Ipv4Addr;

use pnet_packet::Packet;
use pnet_packet::arp::{
    ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket,
};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};

use super::DecodeError;
use super::MacAddr;

/// Length of an Ethernet II header (destination, source, ethertype).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an ARP packet for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// Minimum Ethernet frame length without FCS; built frames are padded to it.
pub const MIN_FRAME_LEN: usize = 60;

/// Ethernet hardware address length, as carried in the ARP `hlen` field.
const ETHERNET_ADDR_LEN: u8 = 6;
/// IPv4 address length, as carried in the ARP `plen` field.
const IPV4_ADDR_LEN: u8 = 4;

/// An ARP request for an IPv4 address, received over Ethernet.
///
/// Only this shape is decoded: the speaker answers requests and nothing
/// else, so replies, other hardware or protocol types are errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRequest {
    /// Destination of the Ethernet frame: broadcast for a normal request,
    /// unicast for the kernel's reachability re-checks (NUD).
    pub eth_destination: MacAddr,
    /// Source of the Ethernet frame.
    pub eth_source: MacAddr,
    /// Hardware address of the asker (`sha`).
    pub sender_mac: MacAddr,
    /// IPv4 address of the asker (`spa`); `0.0.0.0` in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (`tha`); ignored in requests, usually zero.
    pub target_mac: MacAddr,
    /// The address being asked about (`tpa`).
    pub target_ip: Ipv4Addr,
}

impl ArpRequest {
    /// Decodes an Ethernet frame carrying an ARP request for an IPv4 address.
    ///
    /// Trailing bytes (Ethernet padding) are ignored.
    ///
    /// # Errors
    ///
    /// A typed [`DecodeError`] for a frame that is truncated, not ARP, not
    /// Ethernet/IPv4 ARP, or not a request.
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        let ethernet = EthernetPacket::new(frame).ok_or(DecodeError::Truncated {
            what: "Ethernet frame",
            len: frame.len(),
            need: ETHERNET_HEADER_LEN,
        })?;
        let ethertype = ethernet.get_ethertype();
        if ethertype != EtherTypes::Arp {
            return Err(DecodeError::NotArp {
                ethertype: ethertype.0,
            });
        }
        let payload = ethernet.payload();
        let arp = ArpPacket::new(payload).ok_or(DecodeError::Truncated {
            what: "ARP packet",
            len: payload.len(),
            need: ARP_LEN,
        })?;
        let hardware_type = arp.get_hardware_type();
        if hardware_type != ArpHardwareTypes::Ethernet {
            return Err(DecodeError::UnsupportedHardwareType {
                hardware_type: hardware_type.0,
            });
        }
        let protocol_type = arp.get_protocol_type();
        if protocol_type != EtherTypes::Ipv4 {
            return Err(DecodeError::UnsupportedProtocolType {
                protocol_type: protocol_type.0,
            });
        }
        // pnet reads fixed offsets whatever these say; check them so that a
        // packet for another address size is never misread as ours.
        let (hw_len, proto_len) = (arp.get_hw_addr_len(), arp.get_proto_addr_len());
        if hw_len != ETHERNET_ADDR_LEN || proto_len != IPV4_ADDR_LEN {
            return Err(DecodeError::BadAddressLength { hw_len, proto_len });
        }
        let operation = arp.get_operation();
        if operation != ArpOperations::Request {
            return Err(DecodeError::NotArpRequest {
                operation: operation.0,
            });
        }
        Ok(Self {
            eth_destination: ethernet.get_destination(),
            eth_source: ethernet.get_source(),
            sender_mac: arp.get_sender_hw_addr(),
            sender_ip: arp.get_sender_proto_addr(),
            target_mac: arp.get_target_hw_addr(),
            target_ip: arp.get_target_proto_addr(),
        })
    }

    /// Encodes this request as a padded Ethernet frame.
    ///
    /// The first 42 bytes equal those of any frame this was decoded from;
    /// the fuzz targets and round-trip tests rely on that.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        build_frame(&Fields {
            eth_destination: self.eth_destination,
            eth_source: self.eth_source,
            operation: ArpOperations::Request,
            sender_mac: self.sender_mac,
            sender_ip: self.sender_ip,
            target_mac: self.target_mac,
            target_ip: self.target_ip,
        })
    }

    /// Whether this is an RFC 5227 address probe (sender IP `0.0.0.0`): a
    /// host checking that an address is free before using it.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        self.sender_ip.is_unspecified()
    }

    /// Whether this is another host's gratuitous ARP (sender IP = target
    /// IP): an announcement, not a question, so it must not be answered.
    #[must_use]
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// Builds the ARP reply to `request`, saying that `request.target_ip` is at
/// `our_mac`.
///
/// The reply is unicast to the asker's hardware address, as the Linux kernel
/// does. Deciding whether the target is ours to answer is the caller's job.
#[must_use]
pub fn build_reply(request: &ArpRequest, our_mac: MacAddr) -> Vec<u8> {
    build_frame(&Fields {
        eth_destination: request.sender_mac,
        eth_source: our_mac,
        operation: ArpOperations::Reply,
        sender_mac: our_mac,
        sender_ip: request.target_ip,
        target_mac: request.sender_mac,
        target_ip: request.sender_ip,
    })
}

/// Builds a gratuitous ARP in request form (an RFC 5227 "ARP announcement"):
/// broadcast, sender IP = target IP = `ip`, target MAC zero.
///
/// Linux applies an ARP whose sender IP equals its target IP as gratuitous:
/// it overrides a cached entry even within `locktime` (1 s by default) of
/// the last update, when an ordinary ARP would be ignored. That is what moves
/// clients to `our_mac` at once after a failover.
#[must_use]
pub fn build_gratuitous_request(ip: Ipv4Addr, our_mac: MacAddr) -> Vec<u8> {
    build_frame(&Fields {
        eth_destination: MacAddr::broadcast(),
        eth_source: our_mac,
        operation: ArpOperations::Request,
        sender_mac: our_mac,
        sender_ip: ip,
        target_mac: MacAddr::zero(),
        target_ip: ip,
    })
}

/// Builds a gratuitous ARP in reply form: broadcast, sender IP = target IP =
/// `ip`, target MAC = sender MAC = `our_mac`.
///
/// Linux counts a reply as gratuitous only when the target MAC equals the
/// sender MAC as well. Some other stacks honour only unsolicited replies, or
/// only requests, so the announcer sends both forms.
#[must_use]
pub fn build_gratuitous_reply(ip: Ipv4Addr, our_mac: MacAddr) -> Vec<u8> {
    build_frame(&Fields {
        eth_destination: MacAddr::broadcast(),
        eth_source: our_mac,
        operation: ArpOperations::Reply,
        sender_mac: our_mac,
        sender_ip: ip,
        target_mac: our_mac,
        target_ip: ip,
    })
}

/// Every field of an Ethernet/IPv4 ARP frame that varies.
struct Fields {
    eth_destination: MacAddr,
    eth_source: MacAddr,
    operation: ArpOperation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
}

fn build_frame(fields: &Fields) -> Vec<u8> {
    let mut frame = vec![0_u8; MIN_FRAME_LEN];
    // The buffer is sized above the minimum of both packet views, so neither
    // constructor can return None; the fallbacks only keep this panic-free.
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(fields.eth_destination);
        ethernet.set_source(fields.eth_source);
        ethernet.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[ETHERNET_HEADER_LEN..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(ETHERNET_ADDR_LEN);
        arp.set_proto_addr_len(IPV4_ADDR_LEN);
        arp.set_operation(fields.operation);
        arp.set_sender_hw_addr(fields.sender_mac);
        arp.set_sender_proto_addr(fields.sender_ip);
        arp.set_target_hw_addr(fields.target_mac);
        arp.set_target_proto_addr(fields.target_ip);
    }
    frame
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ASKER: MacAddr = MacAddr(0x02, 0x00, 0x00, 0x00, 0x00, 0x01);
    const OURS: MacAddr = MacAddr(0x02, 0x00, 0x00, 0x00, 0x00, 0x02);

    /// A broadcast request from 198.18.0.1 for 198.18.0.200, written out by
    /// hand rather than with the encoder under test.
    fn request_bytes() -> Vec<u8> {
        let mut frame = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
            0x08, 0x06, // ethertype ARP
            0x00, 0x01, // htype Ethernet
            0x08, 0x00, // ptype IPv4
            0x06, 0x04, // hlen, plen
            0x00, 0x01, // request
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha
            198, 18, 0, 1, // spa
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
            198, 18, 0, 200, // tpa
        ];
        frame.resize(MIN_FRAME_LEN, 0);
        frame
    }

    fn request() -> ArpRequest {
        ArpRequest {
            eth_destination: MacAddr::broadcast(),
            eth_source: ASKER,
            sender_mac: ASKER,
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
            target_mac: MacAddr::zero(),
            target_ip: Ipv4Addr::new(198, 18, 0, 200),
        }
    }

    /// Reads back every field of a built frame: (eth dst, eth src, op, sha, spa, tha, tpa).
    fn fields(frame: &[u8]) -> (MacAddr, MacAddr, u16, MacAddr, Ipv4Addr, MacAddr, Ipv4Addr) {
        let ethernet = EthernetPacket::new(frame).unwrap();
        assert_eq!(ethernet.get_ethertype(), EtherTypes::Arp);
        let arp = ArpPacket::new(ethernet.payload()).unwrap();
        assert_eq!(arp.get_hardware_type(), ArpHardwareTypes::Ethernet);
        assert_eq!(arp.get_protocol_type(), EtherTypes::Ipv4);
        assert_eq!((arp.get_hw_addr_len(), arp.get_proto_addr_len()), (6, 4));
        (
            ethernet.get_destination(),
            ethernet.get_source(),
            arp.get_operation().0,
            arp.get_sender_hw_addr(),
            arp.get_sender_proto_addr(),
            arp.get_target_hw_addr(),
            arp.get_target_proto_addr(),
        )
    }

    #[test]
    fn decodes_a_request() {
        assert_eq!(ArpRequest::decode(&request_bytes()), Ok(request()));
        // Without Ethernet padding too.
        assert_eq!(ArpRequest::decode(&request_bytes()[..42]), Ok(request()));
    }

    #[test]
    fn encodes_a_request_byte_for_byte() {
        assert_eq!(request().encode(), request_bytes());
    }

    #[test]
    fn rejects_what_is_not_an_ethernet_ipv4_request() {
        let with = |offset: usize, bytes: &[u8]| {
            let mut frame = request_bytes();
            frame[offset..offset + bytes.len()].copy_from_slice(bytes);
            frame
        };
        let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
            (
                "empty",
                vec![],
                DecodeError::Truncated {
                    what: "Ethernet frame",
                    len: 0,
                    need: 14,
                },
            ),
            (
                "Ethernet header cut",
                request_bytes()[..13].to_vec(),
                DecodeError::Truncated {
                    what: "Ethernet frame",
                    len: 13,
                    need: 14,
                },
            ),
            (
                "ARP cut",
                request_bytes()[..41].to_vec(),
                DecodeError::Truncated {
                    what: "ARP packet",
                    len: 27,
                    need: 28,
                },
            ),
            (
                "IPv4 frame",
                with(12, &[0x08, 0x00]),
                DecodeError::NotArp { ethertype: 0x0800 },
            ),
            (
                "VLAN-tagged",
                with(12, &[0x81, 0x00]),
                DecodeError::NotArp { ethertype: 0x8100 },
            ),
            (
                "IEEE 802 hardware",
                with(14, &[0x00, 0x06]),
                DecodeError::UnsupportedHardwareType { hardware_type: 6 },
            ),
            (
                "IPv6 protocol",
                with(16, &[0x86, 0xdd]),
                DecodeError::UnsupportedProtocolType {
                    protocol_type: 0x86dd,
                },
            ),
            (
                "long hardware addresses",
                with(18, &[8]),
                DecodeError::BadAddressLength {
                    hw_len: 8,
                    proto_len: 4,
                },
            ),
            (
                "long protocol addresses",
                with(19, &[16]),
                DecodeError::BadAddressLength {
                    hw_len: 6,
                    proto_len: 16,
                },
            ),
            (
                "reply",
                with(20, &[0x00, 0x02]),
                DecodeError::NotArpRequest { operation: 2 },
            ),
            (
                "RARP request",
                with(20, &[0x00, 0x03]),
                DecodeError::NotArpRequest { operation: 3 },
            ),
        ];
        for (name, frame, error) in cases {
            assert_eq!(ArpRequest::decode(&frame), Err(error), "{name}");
        }
    }

    #[test]
    fn reply_answers_the_asker_with_our_mac() {
        let frame = build_reply(&request(), OURS);
        assert_eq!(frame.len(), MIN_FRAME_LEN);
        assert_eq!(
            fields(&frame),
            (
                ASKER,
                OURS,
                2,
                OURS,
                Ipv4Addr::new(198, 18, 0, 200),
                ASKER,
                Ipv4Addr::new(198, 18, 0, 1),
            )
        );
        assert!(frame[42..].iter().all(|b| *b == 0));
    }

    #[test]
    fn gratuitous_request_is_a_broadcast_announcement() {
        let ip = Ipv4Addr::new(198, 18, 0, 200);
        let frame = build_gratuitous_request(ip, OURS);
        assert_eq!(frame.len(), MIN_FRAME_LEN);
        assert_eq!(
            fields(&frame),
            (MacAddr::broadcast(), OURS, 1, OURS, ip, MacAddr::zero(), ip)
        );
        // It reads back as a request that is gratuitous.
        let decoded = ArpRequest::decode(&frame).unwrap();
        assert!(decoded.is_gratuitous());
        assert!(!decoded.is_probe());
    }

    #[test]
    fn gratuitous_reply_has_target_mac_equal_to_sender_mac() {
        let ip = Ipv4Addr::new(198, 18, 0, 200);
        let frame = build_gratuitous_reply(ip, OURS);
        assert_eq!(frame.len(), MIN_FRAME_LEN);
        assert_eq!(
            fields(&frame),
            (MacAddr::broadcast(), OURS, 2, OURS, ip, OURS, ip)
        );
        assert_eq!(
            ArpRequest::decode(&frame),
            Err(DecodeError::NotArpRequest { operation: 2 })
        );
    }

    #[test]
    fn probes_and_ordinary_requests() {
        let probe = ArpRequest {
            sender_ip: Ipv4Addr::UNSPECIFIED,
            ..request()
        };
        assert!(probe.is_probe());
        assert!(!probe.is_gratuitous());
        assert!(!request().is_probe());
        assert!(!request().is_gratuitous());
    }

    fn mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(|[a, b, c, d, e, f]| MacAddr::new(a, b, c, d, e, f))
    }

    fn arp_request() -> impl Strategy<Value = ArpRequest> {
        (mac(), mac(), mac(), any::<u32>(), mac(), any::<u32>()).prop_map(
            |(eth_destination, eth_source, sender_mac, sender_ip, target_mac, target_ip)| {
                ArpRequest {
                    eth_destination,
                    eth_source,
                    sender_mac,
                    sender_ip: Ipv4Addr::from(sender_ip),
                    target_mac,
                    target_ip: Ipv4Addr::from(target_ip),
                }
            },
        )
    }

    proptest! {
        #[test]
        fn request_round_trips(request in arp_request()) {
            prop_assert_eq!(ArpRequest::decode(&request.encode()), Ok(request));
        }

        #[test]
        fn reply_round_trips_through_its_fields(request in arp_request(), ours in mac()) {
            let (dst, src, op, sha, spa, tha, tpa) = fields(&build_reply(&request, ours));
            prop_assert_eq!((dst, src, op, sha), (request.sender_mac, ours, 2, ours));
            prop_assert_eq!((spa, tha, tpa), (request.target_ip, request.sender_mac, request.sender_ip));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(request) = ArpRequest::decode(&bytes) {
                prop_assert_eq!(&request.encode()[..42], &bytes[..42]);
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            position in 0_usize..MIN_FRAME_LEN,
            value in any::<u8>(),
            cut in 0_usize..=MIN_FRAME_LEN,
        ) {
            let mut frame = request_bytes();
            frame[position] = value;
            frame.truncate(cut);
            if let Ok(request) = ArpRequest::decode(&frame) {
                prop_assert_eq!(&request.encode()[..42], &frame[..42]);
            }
        }
    }
}

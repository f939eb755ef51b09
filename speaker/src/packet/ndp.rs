//! IPv6 neighbor discovery (RFC 4861): decoding neighbor solicitations and
//! building neighbor advertisements.
//!
//! Messages are ICMPv6 payloads as read from and written to a raw
//! `AF_INET6`/`SOCK_RAW`/`IPPROTO_ICMPV6` socket: the kernel strips the IPv6
//! header on receive (the source address comes from `recvfrom`), and on send
//! it builds the header and **computes the ICMPv6 checksum itself** (RFC 3542
//! §3.1), so built messages leave the checksum field zero.
//! [`icmpv6_checksum`] and [`fill_checksum`] exist for tests and for frames
//! sent with explicit addresses.
//!
//! Two checks belong to the socket adapter because the payload cannot show
//! them: the hop limit of a received solicitation must be 255 (read it with
//! `IPV6_RECVHOPLIMIT`) and advertisements must be sent with hop limit 255,
//! or receivers drop them as possibly off-link (RFC 4861 §7.1).

use std::net::Ipv6Addr;

use pnet_packet::icmpv6::ndp::{
    Icmpv6Codes, MutableNdpOptionPacket, MutableNeighborAdvertPacket, NdpOptionType,
    NdpOptionTypes, NeighborAdvertFlags, NeighborSolicitPacket,
};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types, checksum};

use super::DecodeError;
use super::MacAddr;

/// Length of a neighbor solicitation or advertisement without options.
pub const NDP_HEADER_LEN: usize = 24;
/// Length of a built advertisement: header plus one link-layer address option.
pub const ADVERTISEMENT_LEN: usize = NDP_HEADER_LEN + LINK_LAYER_OPTION_LEN;
/// The all-nodes link-local multicast group, destination of unsolicited
/// advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A link-layer address option for Ethernet: type, length 1 (× 8 bytes), MAC.
const LINK_LAYER_OPTION_LEN: usize = 8;
/// NDP option lengths count units of 8 bytes.
const OPTION_UNIT: usize = 8;

/// A neighbor solicitation received on a raw ICMPv6 socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborSolicitation {
    /// Source address of the IPv6 packet; unspecified (`::`) when the sender
    /// is doing duplicate address detection.
    pub source: Ipv6Addr,
    /// The address being asked about.
    pub target: Ipv6Addr,
    /// The sender's link-layer address, from the source link-layer address
    /// option, if present.
    pub source_link_addr: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// Decodes an ICMPv6 message that arrived from `source`, validating it as
    /// RFC 4861 §7.1.1 asks of what can be seen in the payload: type 135,
    /// code 0, at least 24 bytes, a unicast target, every option with a
    /// non-zero length that fits, and no source link-layer address when the
    /// source is unspecified. Unknown options are skipped; the checksum is
    /// not checked because the kernel already did.
    ///
    /// # Errors
    ///
    /// A typed [`DecodeError`] naming the first rule the message breaks.
    pub fn decode(message: &[u8], source: Ipv6Addr) -> Result<Self, DecodeError> {
        let solicitation = NeighborSolicitPacket::new(message).ok_or(DecodeError::Truncated {
            what: "neighbor solicitation",
            len: message.len(),
            need: NDP_HEADER_LEN,
        })?;
        let icmp_type = solicitation.get_icmpv6_type();
        if icmp_type != Icmpv6Types::NeighborSolicit {
            return Err(DecodeError::NotNeighborSolicitation {
                icmp_type: icmp_type.0,
            });
        }
        let code = solicitation.get_icmpv6_code();
        if code != Icmpv6Codes::NoCode {
            return Err(DecodeError::BadIcmpCode { code: code.0 });
        }
        let target = solicitation.get_target_addr();
        if target.is_multicast() {
            return Err(DecodeError::MulticastTarget { target });
        }
        // Options are walked by hand: pnet's option iterator computes
        // `length * 8` in u8 and overflows (a panic in debug builds) for
        // lengths of 32 and more, which any host on the link could send.
        let source_link_addr = source_link_layer_address(message)?;
        if let Some(link_addr) = source_link_addr
            && source.is_unspecified()
        {
            return Err(DecodeError::UnspecifiedSourceWithLinkLayer { link_addr });
        }
        Ok(Self {
            source,
            target,
            source_link_addr,
        })
    }

    /// Encodes this solicitation as an ICMPv6 message (checksum zero, see the
    /// module documentation). Used by tests and the fuzz targets.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let option_len = if self.source_link_addr.is_some() {
            LINK_LAYER_OPTION_LEN
        } else {
            0
        };
        let mut message = vec![0_u8; NDP_HEADER_LEN + option_len];
        message[0] = Icmpv6Types::NeighborSolicit.0;
        message[8..NDP_HEADER_LEN].copy_from_slice(&self.target.octets());
        if let Some(mac) = self.source_link_addr {
            write_link_layer_option(
                &mut message[NDP_HEADER_LEN..],
                NdpOptionTypes::SourceLLAddr.0,
                mac,
            );
        }
        message
    }

    /// Whether the sender is doing duplicate address detection (source
    /// unspecified): the answer then goes to all nodes, not to the sender.
    #[must_use]
    pub fn is_duplicate_address_detection(&self) -> bool {
        self.source.is_unspecified()
    }

    /// Builds the advertisement answering this solicitation with `our_mac`,
    /// and where to send it (RFC 4861 §7.2.4): back to the sender with the
    /// Solicited and Override flags, or, for duplicate address detection, to
    /// all nodes with Solicited clear.
    ///
    /// Deciding whether the target is ours to answer is the caller's job.
    #[must_use]
    pub fn reply(&self, our_mac: MacAddr) -> Advertisement {
        if self.is_duplicate_address_detection() {
            Advertisement {
                destination: ALL_NODES,
                message: build_unsolicited_advertisement(self.target, our_mac),
            }
        } else {
            Advertisement {
                destination: self.source,
                message: build_solicited_advertisement(self.target, our_mac),
            }
        }
    }
}

/// A neighbor advertisement ready to send on a raw ICMPv6 socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// IPv6 destination to pass to `sendto`.
    pub destination: Ipv6Addr,
    /// The ICMPv6 message, checksum left to the kernel.
    pub message: Vec<u8>,
}

/// Builds a solicited neighbor advertisement for `target` at `our_mac`:
/// Solicited and Override set, Router clear, with a target link-layer address
/// option. Checksum zero (see the module documentation).
#[must_use]
pub fn build_solicited_advertisement(target: Ipv6Addr, our_mac: MacAddr) -> Vec<u8> {
    build_advertisement(
        target,
        our_mac,
        NeighborAdvertFlags::Solicited | NeighborAdvertFlags::Override,
    )
}

/// Builds an unsolicited neighbor advertisement for `target` at `our_mac`, to
/// be sent to [`ALL_NODES`]: Override set so receivers replace a cached
/// link-layer address at once, Solicited clear (RFC 4861 §7.2.6), with a
/// target link-layer address option. Checksum zero (see the module
/// documentation).
#[must_use]
pub fn build_unsolicited_advertisement(target: Ipv6Addr, our_mac: MacAddr) -> Vec<u8> {
    build_advertisement(target, our_mac, NeighborAdvertFlags::Override)
}

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1):
/// `ff02::1:ff00:0/104` with the low 24 bits of `addr`. Solicitations for a
/// VIP are sent there, so the speaker joins this group for each owned VIP.
#[must_use]
pub fn solicited_node_multicast(addr: Ipv6Addr) -> Ipv6Addr {
    let octets = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, octets[13], octets[14], octets[15],
    ])
}

/// Computes the ICMPv6 checksum of `message` sent from `source` to
/// `destination` (over the IPv6 pseudo-header, the checksum field counted as
/// zero).
///
/// # Errors
///
/// [`DecodeError::Truncated`] when `message` is shorter than the 4-byte ICMPv6
/// header.
pub fn icmpv6_checksum(
    message: &[u8],
    source: Ipv6Addr,
    destination: Ipv6Addr,
) -> Result<u16, DecodeError> {
    let packet = Icmpv6Packet::new(message).ok_or(DecodeError::Truncated {
        what: "ICMPv6 message",
        len: message.len(),
        need: Icmpv6Packet::minimum_packet_size(),
    })?;
    Ok(checksum(&packet, &source, &destination))
}

/// Writes the checksum of `message` sent from `source` to `destination` into
/// its checksum field.
///
/// # Errors
///
/// [`DecodeError::Truncated`] when `message` is shorter than the 4-byte ICMPv6
/// header.
pub fn fill_checksum(
    message: &mut [u8],
    source: Ipv6Addr,
    destination: Ipv6Addr,
) -> Result<(), DecodeError> {
    let sum = icmpv6_checksum(message, source, destination)?;
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

fn build_advertisement(target: Ipv6Addr, our_mac: MacAddr, flags: u8) -> Vec<u8> {
    let mut message = vec![0_u8; ADVERTISEMENT_LEN];
    // The buffer is sized for the header, so the view always exists; the
    // `if let` only keeps this panic-free.
    if let Some(mut advert) = MutableNeighborAdvertPacket::new(&mut message) {
        advert.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        advert.set_icmpv6_code(Icmpv6Codes::NoCode);
        advert.set_flags(flags);
        advert.set_target_addr(target);
    }
    write_link_layer_option(
        &mut message[NDP_HEADER_LEN..],
        NdpOptionTypes::TargetLLAddr.0,
        our_mac,
    );
    message
}

/// Writes an 8-byte Ethernet link-layer address option at the start of `buf`.
fn write_link_layer_option(buf: &mut [u8], option_type: u8, mac: MacAddr) {
    if let Some(mut option) = MutableNdpOptionPacket::new(buf) {
        option.set_option_type(NdpOptionType(option_type));
        option.set_length(1);
        option.set_data(&mac.octets());
    }
}

/// Walks the options after the fixed header and returns the first source
/// link-layer address, rejecting any malformed option on the way.
fn source_link_layer_address(message: &[u8]) -> Result<Option<MacAddr>, DecodeError> {
    let mut found = None;
    let mut offset = NDP_HEADER_LEN;
    while offset < message.len() {
        let rest = &message[offset..];
        let [option_type, length, ..] = *rest else {
            return Err(DecodeError::Truncated {
                what: "NDP option",
                len: rest.len(),
                need: 2,
            });
        };
        if length == 0 {
            return Err(DecodeError::ZeroLengthOption {
                option_type,
                offset,
            });
        }
        let need = usize::from(length) * OPTION_UNIT;
        let Some(option) = rest.get(..need) else {
            return Err(DecodeError::OptionOverrun {
                option_type,
                offset,
                need,
                len: rest.len(),
            });
        };
        if option_type == NdpOptionTypes::SourceLLAddr.0 && found.is_none() {
            let [_, _, a, b, c, d, e, f] = *option else {
                return Err(DecodeError::BadLinkLayerOption { length });
            };
            found = Some(MacAddr::new(a, b, c, d, e, f));
        }
        offset += need;
    }
    Ok(found)
}

/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;
/// Offset of the IPv6 header in an Ethernet II frame.
const IPV6_OFFSET: usize = 14;

/// A neighbor solicitation read from a whole Ethernet frame, with the IPv6
/// header fields the responder checks. This is how unicast solicitations
/// (reachability checks) arrive, on a packet socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramedSolicitation {
    /// The solicitation.
    pub solicitation: NeighborSolicitation,
    /// Source of the Ethernet frame.
    pub eth_source: MacAddr,
    /// The IPv6 destination address.
    pub destination: Ipv6Addr,
    /// The IPv6 hop limit.
    pub hop_limit: u8,
}

impl FramedSolicitation {
    /// Decodes an Ethernet frame carrying IPv6 (no extension headers) with
    /// a neighbor solicitation whose checksum is correct. Trailing bytes
    /// beyond the IPv6 payload length (Ethernet padding) are ignored.
    ///
    /// # Errors
    ///
    /// A typed [`DecodeError`] for anything else.
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        let Some(ip) = frame.get(IPV6_OFFSET..IPV6_OFFSET + IPV6_HEADER_LEN) else {
            return Err(DecodeError::Truncated {
                what: "IPv6 frame",
                len: frame.len(),
                need: IPV6_OFFSET + IPV6_HEADER_LEN,
            });
        };
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype != 0x86dd {
            return Err(DecodeError::NotIpv6 { ethertype });
        }
        let next_header = ip[6];
        if next_header != 58 {
            return Err(DecodeError::NotIcmpv6 { next_header });
        }
        let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let mut source = [0_u8; 16];
        source.copy_from_slice(&ip[8..24]);
        let mut destination = [0_u8; 16];
        destination.copy_from_slice(&ip[24..40]);
        let (source, destination) = (Ipv6Addr::from(source), Ipv6Addr::from(destination));
        let start = IPV6_OFFSET + IPV6_HEADER_LEN;
        let Some(message) = frame.get(start..start + payload_len) else {
            return Err(DecodeError::Truncated {
                what: "IPv6 payload",
                len: frame.len().saturating_sub(start),
                need: payload_len,
            });
        };
        let solicitation = NeighborSolicitation::decode(message, source)?;
        let expected = icmpv6_checksum(message, source, destination)?;
        let found = u16::from_be_bytes([message[2], message[3]]);
        if expected != found {
            return Err(DecodeError::BadChecksum { expected, found });
        }
        let eth_source = MacAddr::new(frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]);
        Ok(Self {
            solicitation,
            eth_source,
            destination,
            hop_limit: ip[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ASKER_MAC: MacAddr = MacAddr(0x02, 0x00, 0x00, 0x00, 0x00, 0x01);
    const OUR_MAC: MacAddr = MacAddr(0x02, 0x00, 0x00, 0x00, 0x00, 0x02);
    const ASKER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc8);

    /// A solicitation for 2001:db8::c8 with a source link-layer address
    /// option, written out by hand rather than with the encoder under test.
    fn solicitation_bytes() -> Vec<u8> {
        let mut message = vec![135, 0, 0x12, 0x34, 0, 0, 0, 0];
        message.extend_from_slice(&VIP.octets());
        message.extend_from_slice(&[1, 1, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
        message
    }

    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut message = solicitation_bytes();
        message.truncate(NDP_HEADER_LEN);
        message.extend_from_slice(options);
        message
    }

    #[test]
    fn decodes_a_solicitation() {
        assert_eq!(
            NeighborSolicitation::decode(&solicitation_bytes(), ASKER),
            Ok(NeighborSolicitation {
                source: ASKER,
                target: VIP,
                source_link_addr: Some(ASKER_MAC),
            })
        );
    }

    #[test]
    fn decodes_a_solicitation_without_options() {
        let message = with_options(&[]);
        let decoded = NeighborSolicitation::decode(&message, ASKER).unwrap();
        assert_eq!(decoded.source_link_addr, None);
    }

    #[test]
    fn skips_unknown_options_and_keeps_the_first_source_address() {
        // A nonce option (type 14, 8 bytes), then two source addresses.
        let message = with_options(&[
            14, 1, 1, 2, 3, 4, 5, 6, //
            1, 1, 0x02, 0, 0, 0, 0, 0x01, //
            1, 1, 0x02, 0, 0, 0, 0, 0x09,
        ]);
        let decoded = NeighborSolicitation::decode(&message, ASKER).unwrap();
        assert_eq!(decoded.source_link_addr, Some(ASKER_MAC));
    }

    #[test]
    fn duplicate_address_detection() {
        let message = with_options(&[]);
        let decoded = NeighborSolicitation::decode(&message, Ipv6Addr::UNSPECIFIED).unwrap();
        assert!(decoded.is_duplicate_address_detection());
        assert_eq!(
            NeighborSolicitation::decode(&solicitation_bytes(), Ipv6Addr::UNSPECIFIED),
            Err(DecodeError::UnspecifiedSourceWithLinkLayer {
                link_addr: ASKER_MAC
            })
        );
    }

    #[test]
    fn rejects_malformed_solicitations() {
        let with = |offset: usize, bytes: &[u8]| {
            let mut message = solicitation_bytes();
            message[offset..offset + bytes.len()].copy_from_slice(bytes);
            message
        };
        let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
            (
                "empty",
                vec![],
                DecodeError::Truncated {
                    what: "neighbor solicitation",
                    len: 0,
                    need: 24,
                },
            ),
            (
                "target cut",
                solicitation_bytes()[..23].to_vec(),
                DecodeError::Truncated {
                    what: "neighbor solicitation",
                    len: 23,
                    need: 24,
                },
            ),
            (
                "advertisement",
                with(0, &[136]),
                DecodeError::NotNeighborSolicitation { icmp_type: 136 },
            ),
            (
                "echo request",
                with(0, &[128]),
                DecodeError::NotNeighborSolicitation { icmp_type: 128 },
            ),
            (
                "code 1",
                with(1, &[1]),
                DecodeError::BadIcmpCode { code: 1 },
            ),
            (
                "multicast target",
                with(8, &[0xff, 0x02]),
                DecodeError::MulticastTarget {
                    target: Ipv6Addr::new(0xff02, 0xdb8, 0, 0, 0, 0, 0, 0xc8),
                },
            ),
            (
                "option length 0",
                with(25, &[0]),
                DecodeError::ZeroLengthOption {
                    option_type: 1,
                    offset: 24,
                },
            ),
            (
                "option longer than the message",
                with(25, &[2]),
                DecodeError::OptionOverrun {
                    option_type: 1,
                    offset: 24,
                    need: 16,
                    len: 8,
                },
            ),
            (
                // 255 × 8 overflows a u8 computation; must be a clean error.
                "option length 255",
                with(25, &[255]),
                DecodeError::OptionOverrun {
                    option_type: 1,
                    offset: 24,
                    need: 2040,
                    len: 8,
                },
            ),
            (
                "one stray byte after the options",
                [solicitation_bytes(), vec![1]].concat(),
                DecodeError::Truncated {
                    what: "NDP option",
                    len: 1,
                    need: 2,
                },
            ),
            (
                "source address option of 16 bytes",
                with_options(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                DecodeError::BadLinkLayerOption { length: 2 },
            ),
            (
                "zero-length option after a good one",
                with_options(&[1, 1, 2, 0, 0, 0, 0, 1, 14, 0]),
                DecodeError::ZeroLengthOption {
                    option_type: 14,
                    offset: 32,
                },
            ),
        ];
        for (name, message, error) in cases {
            assert_eq!(
                NeighborSolicitation::decode(&message, ASKER),
                Err(error),
                "{name}"
            );
        }
    }

    /// Reads back (type, code, checksum, flags, target, option bytes).
    fn advertisement_fields(message: &[u8]) -> (u8, u8, u16, u8, Ipv6Addr, &[u8]) {
        let target: [u8; 16] = message[8..24].try_into().unwrap();
        (
            message[0],
            message[1],
            u16::from_be_bytes([message[2], message[3]]),
            message[4],
            Ipv6Addr::from(target),
            &message[24..],
        )
    }

    #[test]
    fn solicited_advertisement() {
        let message = build_solicited_advertisement(VIP, OUR_MAC);
        assert_eq!(message.len(), ADVERTISEMENT_LEN);
        assert_eq!(
            advertisement_fields(&message),
            (136, 0, 0, 0x60, VIP, &[2, 1, 0x02, 0, 0, 0, 0, 0x02][..])
        );
        assert_eq!(&message[5..8], &[0, 0, 0]);
    }

    #[test]
    fn unsolicited_advertisement_overrides_without_solicited() {
        let message = build_unsolicited_advertisement(VIP, OUR_MAC);
        assert_eq!(
            advertisement_fields(&message),
            (136, 0, 0, 0x20, VIP, &[2, 1, 0x02, 0, 0, 0, 0, 0x02][..])
        );
    }

    #[test]
    fn reply_goes_back_to_the_asker() {
        let solicitation = NeighborSolicitation::decode(&solicitation_bytes(), ASKER).unwrap();
        let reply = solicitation.reply(OUR_MAC);
        assert_eq!(reply.destination, ASKER);
        assert_eq!(reply.message, build_solicited_advertisement(VIP, OUR_MAC));
    }

    #[test]
    fn reply_to_duplicate_address_detection_goes_to_all_nodes() {
        let message = with_options(&[]);
        let solicitation = NeighborSolicitation::decode(&message, Ipv6Addr::UNSPECIFIED).unwrap();
        let reply = solicitation.reply(OUR_MAC);
        assert_eq!(reply.destination, ALL_NODES);
        assert_eq!(advertisement_fields(&reply.message).3, 0x20);
    }

    #[test]
    fn solicited_node_multicast_addresses() {
        let cases = [
            (VIP, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0xc8)),
            (
                // The example of RFC 4291 §2.7.1.
                Ipv6Addr::new(0x4037, 0, 0, 0, 0x1, 0x800, 0x200e, 0x8c6c),
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff0e, 0x8c6c),
            ),
            (
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xabcd, 0xef01),
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xffcd, 0xef01),
            ),
        ];
        for (addr, group) in cases {
            assert_eq!(solicited_node_multicast(addr), group, "{addr}");
        }
    }

    /// The Internet checksum over the IPv6 pseudo-header and `message`,
    /// written independently of pnet; zero when `message` carries a correct
    /// checksum.
    fn reference_sum(message: &[u8], source: Ipv6Addr, destination: Ipv6Addr) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&source.octets());
        bytes.extend_from_slice(&destination.octets());
        bytes.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        bytes.extend_from_slice(message);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn checksum_verifies_independently() {
        let source = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        for (mut message, destination) in [
            (build_solicited_advertisement(VIP, OUR_MAC), ASKER),
            (build_unsolicited_advertisement(VIP, OUR_MAC), ALL_NODES),
            (solicitation_bytes(), solicited_node_multicast(VIP)),
        ] {
            fill_checksum(&mut message, source, destination).unwrap();
            assert_ne!(&message[2..4], &[0, 0]);
            assert_eq!(reference_sum(&message, source, destination), 0);
            // The checksum field does not count towards itself.
            assert_eq!(
                icmpv6_checksum(&message, source, destination)
                    .unwrap()
                    .to_be_bytes(),
                [message[2], message[3]]
            );
        }
    }

    #[test]
    fn checksum_of_a_truncated_message_is_an_error() {
        assert_eq!(
            icmpv6_checksum(&[135, 0, 0], ASKER, VIP),
            Err(DecodeError::Truncated {
                what: "ICMPv6 message",
                len: 3,
                need: 4
            })
        );
    }

    fn solicitation() -> impl Strategy<Value = NeighborSolicitation> {
        let mac = any::<[u8; 6]>().prop_map(|[a, b, c, d, e, f]| MacAddr::new(a, b, c, d, e, f));
        (any::<u128>(), any::<u128>(), proptest::option::of(mac))
            .prop_map(|(source, target, source_link_addr)| NeighborSolicitation {
                source: Ipv6Addr::from(source),
                target: Ipv6Addr::from(target),
                source_link_addr,
            })
            .prop_filter("valid solicitations only", |ns| {
                let dad_with_address = ns.source.is_unspecified() && ns.source_link_addr.is_some();
                !ns.target.is_multicast() && !dad_with_address
            })
    }

    proptest! {
        #[test]
        fn solicitation_round_trips(ns in solicitation()) {
            prop_assert_eq!(NeighborSolicitation::decode(&ns.encode(), ns.source), Ok(ns));
        }

        #[test]
        fn advertisements_carry_target_and_mac(target in any::<u128>(), mac in any::<[u8; 6]>()) {
            let target = Ipv6Addr::from(target);
            let [a, b, c, d, e, f] = mac;
            let message = build_solicited_advertisement(target, MacAddr::new(a, b, c, d, e, f));
            let (_, _, _, _, got_target, option) = advertisement_fields(&message);
            prop_assert_eq!(got_target, target);
            prop_assert_eq!(&option[2..], &mac[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
            source in any::<u128>(),
        ) {
            let source = Ipv6Addr::from(source);
            if let Ok(ns) = NeighborSolicitation::decode(&bytes, source) {
                prop_assert_eq!(NeighborSolicitation::decode(&ns.encode(), source), Ok(ns));
            }
        }

        #[test]
        fn arbitrary_options_never_panic(
            options in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let message = with_options(&options);
            if let Ok(ns) = NeighborSolicitation::decode(&message, ASKER) {
                prop_assert_eq!(ns.target, VIP);
                prop_assert_eq!(NeighborSolicitation::decode(&ns.encode(), ASKER), Ok(ns));
            }
        }
    }

    /// A unicast reachability check for VIP from ASKER, as an Ethernet frame.
    fn unicast_frame(hop_limit: u8) -> Vec<u8> {
        let mut message = with_options(&[]);
        fill_checksum(&mut message, ASKER, VIP).unwrap();
        let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd];
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&u16::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&[58, hop_limit]);
        frame.extend_from_slice(&ASKER.octets());
        frame.extend_from_slice(&VIP.octets());
        frame.extend_from_slice(&message);
        frame
    }

    #[test]
    fn decodes_a_framed_unicast_solicitation() {
        let mut frame = unicast_frame(255);
        frame.resize(frame.len() + 6, 0); // Ethernet padding
        let framed = FramedSolicitation::decode(&frame).unwrap();
        assert_eq!(framed.destination, VIP);
        assert_eq!(framed.eth_source, ASKER_MAC);
        assert_eq!(framed.hop_limit, 255);
        assert_eq!(framed.solicitation.source, ASKER);
        assert_eq!(framed.solicitation.target, VIP);
    }

    #[test]
    fn rejects_bad_framed_solicitations() {
        let mut bad_sum = unicast_frame(255);
        bad_sum[14 + 40 + 2] ^= 0xff;
        assert!(matches!(
            FramedSolicitation::decode(&bad_sum),
            Err(DecodeError::BadChecksum { .. })
        ));
        let mut udp = unicast_frame(255);
        udp[20] = 17;
        assert_eq!(
            FramedSolicitation::decode(&udp),
            Err(DecodeError::NotIcmpv6 { next_header: 17 })
        );
        let mut ipv4 = unicast_frame(255);
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            FramedSolicitation::decode(&ipv4),
            Err(DecodeError::NotIpv6 { ethertype: 0x0800 })
        );
        let frame = unicast_frame(255);
        for cut in 0..frame.len() {
            assert!(
                FramedSolicitation::decode(&frame[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn framed_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = FramedSolicitation::decode(&bytes);
        }
    }
}

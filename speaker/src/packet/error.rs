//! Why a received packet was not decoded.

use std::net::Ipv6Addr;

use super::MacAddr;

/// Why bytes received on a socket are not a packet the responder answers.
///
/// Decoding errors are expected in normal operation (the receive path sees
/// every ARP request and neighbor solicitation on the link, including
/// malformed ones); the responder counts and drops them, it never panics.
/// Each variant names the field or part that broke the rule, with the
/// value or lengths seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is shorter than the fixed part of the packet.
    #[error("{what} truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// Which packet or part of it was being decoded.
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes required.
        need: usize,
    },
    /// The Ethernet frame does not carry ARP.
    #[error("not an ARP frame: ethertype {ethertype:#06x}")]
    NotArp {
        /// The frame's ethertype.
        ethertype: u16,
    },
    /// ARP for a link layer other than Ethernet.
    #[error("unsupported ARP hardware type {hardware_type} (only Ethernet, 1, is answered)")]
    UnsupportedHardwareType {
        /// The `htype` field.
        hardware_type: u16,
    },
    /// ARP for a protocol other than IPv4.
    #[error("unsupported ARP protocol type {protocol_type:#06x} (only IPv4, 0x0800, is answered)")]
    UnsupportedProtocolType {
        /// The `ptype` field.
        protocol_type: u16,
    },
    /// Address lengths that do not match Ethernet/IPv4 (6 and 4).
    #[error("ARP address lengths {hw_len}/{proto_len} do not match Ethernet/IPv4 (6/4)")]
    BadAddressLength {
        /// The `hlen` field.
        hw_len: u8,
        /// The `plen` field.
        proto_len: u8,
    },
    /// An ARP packet that is not a request (replies are not answered).
    #[error("ARP operation {operation} is not a request (1)")]
    NotArpRequest {
        /// The `oper` field.
        operation: u16,
    },
    /// An ICMPv6 message that is not a neighbor solicitation.
    #[error("ICMPv6 type {icmp_type} is not a neighbor solicitation (135)")]
    NotNeighborSolicitation {
        /// The ICMPv6 type.
        icmp_type: u8,
    },
    /// A neighbor solicitation with a non-zero code (RFC 4861 §7.1.1: discard).
    #[error("neighbor solicitation has code {code}, must be 0")]
    BadIcmpCode {
        /// The ICMPv6 code.
        code: u8,
    },
    /// A neighbor solicitation for a multicast target (RFC 4861 §7.1.1: discard).
    #[error("neighbor solicitation targets multicast address {target}")]
    MulticastTarget {
        /// The target address.
        target: Ipv6Addr,
    },
    /// An NDP option with length 0 (RFC 4861 §4.6: discard the whole packet).
    #[error("NDP option of type {option_type} at offset {offset} has length 0")]
    ZeroLengthOption {
        /// The option's type.
        option_type: u8,
        /// Offset of the option within the ICMPv6 message.
        offset: usize,
    },
    /// An NDP option that claims more bytes than the message has.
    #[error("NDP option of type {option_type} at offset {offset} needs {need} bytes, {len} left")]
    OptionOverrun {
        /// The option's type.
        option_type: u8,
        /// Offset of the option within the ICMPv6 message.
        offset: usize,
        /// Bytes the option claims (length field × 8).
        need: usize,
        /// Bytes left in the message.
        len: usize,
    },
    /// A source link-layer address option that is not 6 bytes of Ethernet address.
    #[error(
        "source link-layer address option has length {length} (×8 bytes), expected 1 for Ethernet"
    )]
    BadLinkLayerOption {
        /// The option's length field.
        length: u8,
    },
    /// A solicitation from the unspecified address (duplicate address
    /// detection) that carries a source link-layer address (RFC 4861 §7.1.1).
    #[error(
        "neighbor solicitation from the unspecified address carries source link-layer address {link_addr}"
    )]
    UnspecifiedSourceWithLinkLayer {
        /// The link-layer address the option carries.
        link_addr: MacAddr,
    },
    /// An Ethernet frame that does not carry IPv6.
    #[error("not an IPv6 frame: ethertype {ethertype:#06x}")]
    NotIpv6 {
        /// The frame's ethertype.
        ethertype: u16,
    },
    /// An IPv6 packet whose next header is not ICMPv6 (extension headers
    /// included: neighbor discovery does not use them).
    #[error("IPv6 next header {next_header} is not ICMPv6 (58)")]
    NotIcmpv6 {
        /// The next-header field.
        next_header: u8,
    },
    /// An ICMPv6 message whose checksum does not match.
    #[error("ICMPv6 checksum {found:#06x}, expected {expected:#06x}")]
    BadChecksum {
        /// The checksum computed over the message.
        expected: u16,
        /// The checksum carried in the message.
        found: u16,
    },
}

//! The raw sockets of the data plane, and the small traits through which
//! the responder and the announcer use them.
//!
//! The receive path sees only what it answers:
//!
//! - IPv4: per interface, an `AF_PACKET` socket with a classic BPF filter
//!   that passes ARP requests only ([`ARP_REQUEST_FILTER`]), attached before
//!   the socket is bound to the ARP ethertype and the interface.
//! - IPv6: one raw ICMPv6 socket whose `ICMP6_FILTER` passes neighbor
//!   solicitations only, joined to the solicited-node multicast group of
//!   each owned IPv6 address on each interface announcing it; it sends
//!   every advertisement.
//! - IPv6 reachability checks (NUD): a client re-checking a cached entry
//!   sends its solicitation unicast to the VIP, which is not a local
//!   address, so the kernel forwards or drops it and the ICMPv6 socket never
//!   sees it. Per interface, a second `AF_PACKET` socket bound to the IPv6
//!   ethertype takes them, with a BPF filter passing only unicast frames
//!   carrying a neighbor solicitation ([`UNICAST_NS_FILTER`]).
//!
//! The system calls themselves are in [`sys`], the crate's only `unsafe`
//! module.

mod sys;

use std::future::Future;
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Ethertype of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv6 next-header value of ICMPv6.
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 type of a neighbor solicitation.
const NEIGHBOR_SOLICITATION: u8 = 135;

/// Classic BPF opcodes used by [`ARP_REQUEST_FILTER`] (`linux/filter.h`).
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The classic BPF program on every ARP socket: accept a frame only when
/// its ethertype is ARP (bytes 12–13) and its ARP operation is request
/// (bytes 20–21). Everything else is dropped in the kernel, before it is
/// queued or copied.
pub const ARP_REQUEST_FILTER: [libc::sock_filter; 6] = [
    bpf(BPF_LD_H_ABS, 0, 0, 12),
    bpf(BPF_JMP_JEQ_K, 0, 3, ETH_P_ARP as u32),
    bpf(BPF_LD_H_ABS, 0, 0, 20),
    bpf(BPF_JMP_JEQ_K, 0, 1, 1),
    bpf(BPF_RET_K, 0, 0, 0x0004_0000),
    bpf(BPF_RET_K, 0, 0, 0),
];

/// The classic BPF program on every unicast-solicitation socket: accept a
/// frame only when its destination MAC is unicast (bit 0 of byte 0 clear),
/// its ethertype is IPv6, the IPv6 next header (byte 20) is ICMPv6 and the
/// ICMPv6 type (byte 54) is neighbor solicitation. Multicast solicitations
/// are left to the ICMPv6 socket, so none is answered twice.
pub const UNICAST_NS_FILTER: [libc::sock_filter; 10] = [
    bpf(BPF_LD_B_ABS, 0, 0, 0),
    bpf(BPF_JMP_JSET_K, 7, 0, 1),
    bpf(BPF_LD_H_ABS, 0, 0, 12),
    bpf(BPF_JMP_JEQ_K, 0, 5, ETH_P_IPV6 as u32),
    bpf(BPF_LD_B_ABS, 0, 0, 20),
    bpf(BPF_JMP_JEQ_K, 0, 3, IPPROTO_ICMPV6 as u32),
    bpf(BPF_LD_B_ABS, 0, 0, 54),
    bpf(BPF_JMP_JEQ_K, 0, 1, NEIGHBOR_SOLICITATION as u32),
    bpf(BPF_RET_K, 0, 0, 0x0004_0000),
    bpf(BPF_RET_K, 0, 0, 0),
];

/// Link-layer frames in and out of one interface.
///
/// Implemented by [`PacketSocket`] and, in tests, by in-memory queues.
pub trait FrameIo: Send + Sync + 'static {
    /// Waits for the next frame and copies it into `buf`; returns its length.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Sends one complete Ethernet frame without waiting.
    ///
    /// # Errors
    ///
    /// The socket's error, e.g. a full send queue.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
}

/// An ICMPv6 message received, with where it came from and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Meta {
    /// Bytes of the ICMPv6 message (header included) in the buffer.
    pub len: usize,
    /// IPv6 source address.
    pub source: Ipv6Addr,
    /// IPv6 destination address, when the kernel reported it.
    pub destination: Option<Ipv6Addr>,
    /// Index of the receiving interface, when the kernel reported it.
    pub interface: Option<u32>,
    /// Hop limit of the received packet, when the kernel reported it.
    pub hop_limit: Option<u8>,
}

/// ICMPv6 messages in and out of the node, over all interfaces.
///
/// Implemented by [`NdpSocket`] and, in tests, by in-memory queues.
pub trait Icmpv6Io: Send + Sync + 'static {
    /// Waits for the next message and copies it into `buf`.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<Icmpv6Meta>> + Send;
    /// Sends `message` to `destination` out of interface `ifindex` with hop
    /// limit 255; the checksum is filled in on the way out.
    ///
    /// # Errors
    ///
    /// The socket's error.
    fn send(&self, message: &[u8], destination: Ipv6Addr, ifindex: u32) -> io::Result<()>;
}

/// An `AF_PACKET` socket on one interface receiving only what its BPF
/// filter passes: ARP requests, or unicast neighbor solicitations.
#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens the ARP socket on interface `ifindex`: protocol 0, BPF filter
    /// [`ARP_REQUEST_FILTER`], bind to ARP and the interface, drain. Needs
    /// `CAP_NET_RAW` and a running tokio runtime.
    ///
    /// # Errors
    ///
    /// The failing system call's error.
    pub fn arp_requests(ifindex: u32) -> io::Result<Self> {
        let fd = sys::open_packet_socket(ifindex, ETH_P_ARP, &ARP_REQUEST_FILTER)?;
        Ok(Self {
            fd: sys::register(fd)?,
            ifindex,
        })
    }

    /// Opens the unicast-solicitation socket on interface `ifindex`, like
    /// [`arp_requests`](Self::arp_requests) with [`UNICAST_NS_FILTER`] and
    /// the IPv6 ethertype.
    ///
    /// # Errors
    ///
    /// The failing system call's error.
    pub fn unicast_solicitations(ifindex: u32) -> io::Result<Self> {
        let fd = sys::open_packet_socket(ifindex, ETH_P_IPV6, &UNICAST_NS_FILTER)?;
        Ok(Self {
            fd: sys::register(fd)?,
            ifindex,
        })
    }

    /// The interface this socket is bound to.
    #[must_use]
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl FrameIo for PacketSocket {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| sys::recv(fd.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        sys::send(self.fd.get_ref(), frame)
    }
}

/// The raw ICMPv6 socket receiving only neighbor solicitations.
#[derive(Debug)]
pub struct NdpSocket {
    fd: AsyncFd<OwnedFd>,
}

impl NdpSocket {
    /// Opens the socket. Needs `CAP_NET_RAW` and a running tokio runtime.
    ///
    /// # Errors
    ///
    /// The failing system call's error.
    pub fn open() -> io::Result<Self> {
        let fd = sys::open_icmpv6_socket(NEIGHBOR_SOLICITATION)?;
        Ok(Self {
            fd: sys::register(fd)?,
        })
    }

    /// Joins multicast `group` on interface `ifindex`.
    ///
    /// # Errors
    ///
    /// The kernel's error, e.g. for an interface that has gone.
    pub fn join(&self, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        sys::set_membership(self.fd.get_ref(), group, ifindex, true)
    }

    /// Leaves multicast `group` on interface `ifindex`.
    ///
    /// # Errors
    ///
    /// The kernel's error, e.g. for an interface that has gone.
    pub fn leave(&self, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        sys::set_membership(self.fd.get_ref(), group, ifindex, false)
    }
}

impl Icmpv6Io for NdpSocket {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Icmpv6Meta> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| sys::recv_icmpv6(fd.get_ref(), buf)) {
                Ok(result) => {
                    return result.map(|r| Icmpv6Meta {
                        len: r.len,
                        source: r.source,
                        destination: r.destination,
                        interface: r.interface,
                        hop_limit: r.hop_limit,
                    });
                }
                Err(_would_block) => {}
            }
        }
    }

    fn send(&self, message: &[u8], destination: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        sys::send_icmpv6(self.fd.get_ref(), message, destination, ifindex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MacAddr;
    use crate::packet::arp::{build_gratuitous_reply, build_gratuitous_request};

    /// Runs a classic BPF program of the few opcodes we use over `frame`.
    fn run(program: &[libc::sock_filter], frame: &[u8]) -> u32 {
        let mut accumulator = 0_u32;
        let mut pc = 0_usize;
        while let Some(insn) = program.get(pc) {
            match insn.code {
                BPF_LD_H_ABS | BPF_LD_B_ABS => {
                    let at = insn.k as usize;
                    let width = if insn.code == BPF_LD_H_ABS { 2 } else { 1 };
                    let Some(bytes) = frame.get(at..at + width) else {
                        return 0; // the kernel drops the packet on an out-of-bounds load
                    };
                    accumulator = bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b));
                    pc += 1;
                }
                BPF_JMP_JEQ_K | BPF_JMP_JSET_K => {
                    let taken = if insn.code == BPF_JMP_JEQ_K {
                        accumulator == insn.k
                    } else {
                        accumulator & insn.k != 0
                    };
                    let offset = if taken { insn.jt } else { insn.jf };
                    pc += 1 + usize::from(offset);
                }
                BPF_RET_K => return insn.k,
                code => panic!("unexpected opcode {code:#x}"),
            }
        }
        panic!("fell off the end of the program");
    }

    #[test]
    fn bpf_filter_passes_arp_requests_only() {
        let ours = MacAddr::new(2, 0, 0, 0, 0, 2);
        let ip = "198.18.0.200".parse().unwrap();
        let request = build_gratuitous_request(ip, ours);
        let reply = build_gratuitous_reply(ip, ours);
        let mut ipv4 = request.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ipv6 = request.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut rarp = request.clone();
        rarp[20..22].copy_from_slice(&[0x00, 0x03]);
        assert_ne!(run(&ARP_REQUEST_FILTER, &request), 0);
        assert_eq!(run(&ARP_REQUEST_FILTER, &reply), 0);
        assert_eq!(run(&ARP_REQUEST_FILTER, &ipv4), 0);
        assert_eq!(run(&ARP_REQUEST_FILTER, &ipv6), 0);
        assert_eq!(run(&ARP_REQUEST_FILTER, &rarp), 0);
        assert_eq!(run(&ARP_REQUEST_FILTER, &request[..21]), 0);
        assert_eq!(run(&ARP_REQUEST_FILTER, &[]), 0);
    }

    /// An Ethernet frame to `destination` carrying IPv6 with next header
    /// `next` and an ICMPv6 message of type `icmp_type`.
    fn ipv6_frame(destination: [u8; 6], next: u8, icmp_type: u8) -> Vec<u8> {
        let mut frame = vec![0_u8; 14 + 40 + 32];
        frame[..6].copy_from_slice(&destination);
        frame[12..14].copy_from_slice(&[0x86, 0xdd]);
        frame[14] = 0x60;
        frame[20] = next;
        frame[21] = 255;
        frame[54] = icmp_type;
        frame
    }

    #[test]
    fn bpf_filter_passes_unicast_solicitations_only() {
        let ours = [0x02, 0, 0, 0, 0, 0x02];
        let solicited_node = [0x33, 0x33, 0xff, 0, 0, 0xc8];
        assert_ne!(run(&UNICAST_NS_FILTER, &ipv6_frame(ours, 58, 135)), 0);
        // Multicast solicitations are the ICMPv6 socket's.
        assert_eq!(
            run(&UNICAST_NS_FILTER, &ipv6_frame(solicited_node, 58, 135)),
            0
        );
        assert_eq!(run(&UNICAST_NS_FILTER, &ipv6_frame([0xff; 6], 58, 135)), 0);
        // Advertisements, echo requests, UDP.
        assert_eq!(run(&UNICAST_NS_FILTER, &ipv6_frame(ours, 58, 136)), 0);
        assert_eq!(run(&UNICAST_NS_FILTER, &ipv6_frame(ours, 58, 128)), 0);
        assert_eq!(run(&UNICAST_NS_FILTER, &ipv6_frame(ours, 17, 135)), 0);
        // IPv4 and ARP.
        let mut ipv4 = ipv6_frame(ours, 58, 135);
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run(&UNICAST_NS_FILTER, &ipv4), 0);
        assert_eq!(run(&UNICAST_NS_FILTER, &ipv6_frame(ours, 58, 135)[..54]), 0);
    }
}

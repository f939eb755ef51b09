//! Every system call of the data plane, and the only `unsafe` code in the
//! crate.
//!
//! Each function here is a thin, checked wrapper around one or two libc
//! calls: arguments are built from safe Rust values, return codes become
//! `io::Result`, and nothing is interpreted beyond what the call returns.
//! The callers in [`super`] decide what to open and what the bytes mean.

#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `SO_ATTACH_FILTER` from `asm-generic/socket.h`; the same value on every
/// architecture we build for (x86_64, aarch64), and not exported by libc
/// for them.
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `PACKET_IGNORE_OUTGOING` from `linux/if_packet.h` (level `SOL_PACKET`).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `ICMP6_FILTER` from `linux/icmpv6.h` (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;
/// A hop limit of 255 is how neighbor discovery proves a packet was not
/// routed (RFC 4861 §7.1.1); we send with it and accept only it.
pub(crate) const NDP_HOP_LIMIT: libc::c_int = 255;

/// `struct in6_pktinfo` from `linux/ipv6.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct In6PktInfo {
    addr: [u8; 16],
    ifindex: libc::c_uint,
}

/// A control-message buffer aligned like `struct cmsghdr`, big enough for
/// the packet-info and hop-limit messages we ask for.
#[repr(C, align(8))]
struct Control([u8; 128]);

/// Registers a socket with tokio's reactor for readability.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that stays open, and is the
    // same descriptor, until it is dropped, which happens only with the
    // `AsyncFd` that owns it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_len(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
    let fd = check(unsafe {
        libc::socket(
            domain,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2), is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` points to `len` readable bytes for the whole call, and
    // the kernel copies them before returning.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    })?;
    Ok(())
}

/// Opens an `AF_PACKET`/`SOCK_RAW` socket that receives only what `filter`
/// accepts of the frames of protocol `ethertype` on interface `ifindex`.
///
/// The order matters: a packet socket opened with protocol 0 receives
/// nothing; the filter is attached while it is still deaf; only then is it
/// bound to the ethertype and interface. Frames queued before the filter
/// took effect (none are expected, but the kernel does not promise it) are
/// drained, so the first frame read has passed the filter.
pub(crate) fn open_packet_socket(
    ifindex: u32,
    ethertype: u16,
    filter: &[libc::sock_filter],
) -> io::Result<OwnedFd> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        // The kernel only reads through this pointer (it copies the program).
        filter: filter.as_ptr().cast_mut(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &program)?;
    // A packet socket also sees the frames this host sends, our own
    // gratuitous ARPs included; they are not questions to us. Kernels
    // before 4.20 lack the option, and the responder ignores them anyway.
    let on: libc::c_int = 1;
    let _ = setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &on);
    let address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `address` is a valid sockaddr_ll of `len` bytes for the call.
    check(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&address).cast(), len) })?;
    drain(&fd)?;
    Ok(fd)
}

/// Reads and drops whatever is queued on a non-blocking socket.
fn drain(fd: &OwnedFd) -> io::Result<()> {
    let mut buf = [0_u8; 2048];
    loop {
        match recv(fd, &mut buf) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}

/// Receives one datagram (one frame on a packet socket) into `buf`.
pub(crate) fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes for the whole call.
    check_len(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// Sends one datagram (one complete frame on a bound packet socket).
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is readable for `buf.len()` bytes for the whole call.
    let sent = check_len(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })?;
    if sent == buf.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", buf.len()),
        ))
    }
}

/// The `ICMP6_FILTER` value that passes only ICMPv6 type `pass`: in Linux's
/// filter a set bit blocks its type.
fn icmp6_filter_passing(pass: u8) -> [u32; 8] {
    let mut filter = [u32::MAX; 8];
    filter[usize::from(pass >> 5)] &= !(1_u32 << (pass & 31));
    filter
}

/// Opens the raw ICMPv6 socket for neighbor discovery: it receives only
/// neighbor solicitations (`ICMP6_FILTER`), sends with hop limit 255, and
/// reports each datagram's hop limit, destination and receiving interface.
pub(crate) fn open_icmpv6_socket(pass_type: u8) -> io::Result<OwnedFd> {
    let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
    setsockopt(
        &fd,
        libc::IPPROTO_ICMPV6,
        ICMP6_FILTER,
        &icmp6_filter_passing(pass_type),
    )?;
    let on: libc::c_int = 1;
    setsockopt(
        &fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_HOPS,
        &NDP_HOP_LIMIT,
    )?;
    setsockopt(
        &fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_UNICAST_HOPS,
        &NDP_HOP_LIMIT,
    )?;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &on)?;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &on)?;
    // Our own unsolicited advertisements need not come back to us.
    let off: libc::c_int = 0;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &off)?;
    drain(&fd)?;
    Ok(fd)
}

/// Joins (`join = true`) or leaves multicast `group` on interface `ifindex`.
pub(crate) fn set_membership(
    fd: &OwnedFd,
    group: Ipv6Addr,
    ifindex: u32,
    join: bool,
) -> io::Result<()> {
    let request = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: group.octets(),
        },
        ipv6mr_interface: ifindex,
    };
    let option = if join {
        libc::IPV6_ADD_MEMBERSHIP
    } else {
        libc::IPV6_DROP_MEMBERSHIP
    };
    setsockopt(fd, libc::IPPROTO_IPV6, option, &request)
}

/// An ICMPv6 message as received, with what the kernel told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes of ICMPv6 message written to the buffer.
    pub(crate) len: usize,
    /// The IPv6 source address.
    pub(crate) source: Ipv6Addr,
    /// The IPv6 destination address (`IPV6_PKTINFO`).
    pub(crate) destination: Option<Ipv6Addr>,
    /// The receiving interface (`IPV6_PKTINFO`).
    pub(crate) interface: Option<u32>,
    /// The hop limit of the IPv6 header (`IPV6_HOPLIMIT`).
    pub(crate) hop_limit: Option<u8>,
}

fn empty_sockaddr_in6(address: Ipv6Addr, scope_id: u32) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: address.octets(),
        },
        sin6_scope_id: scope_id,
    }
}

/// Length of `struct cmsghdr` rounded up as `CMSG_ALIGN` does.
const CMSG_HEADER: usize = size_of::<libc::cmsghdr>().next_multiple_of(size_of::<usize>());

/// Receives one ICMPv6 message with its packet info and hop limit.
pub(crate) fn recv_icmpv6(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut source = empty_sockaddr_in6(Ipv6Addr::UNSPECIFIED, 0);
    let mut control = Control([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // A msghdr has private padding fields on some targets, so it is built
    // zeroed and then filled in.
    // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_name = std::ptr::from_mut(&mut source).cast();
    message.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    message.msg_controllen = control.0.len() as _;
    // SAFETY: every pointer in `message` refers to a live local buffer of the
    // stated length (source address, `buf` through `iov`, `control`) for
    // the whole call.
    let len =
        check_len(unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut message, libc::MSG_DONTWAIT) })?;
    // `msg_controllen` is a size_t on glibc and a socklen_t on musl.
    #[allow(clippy::useless_conversion)]
    let control_len = usize::try_from(message.msg_controllen)
        .unwrap_or(0)
        .min(control.0.len());
    let mut received = Received {
        len,
        source: Ipv6Addr::from(source.sin6_addr.s6_addr),
        destination: None,
        interface: None,
        hop_limit: None,
    };
    parse_control(&control.0[..control_len], &mut received);
    Ok(received)
}

/// Reads the packet-info and hop-limit control messages from the bytes the
/// kernel wrote, in safe code: `cmsg_len` (a `size_t`), level and type (two
/// `int`s), then the data at `CMSG_HEADER`.
fn parse_control(mut control: &[u8], received: &mut Received) {
    const WORD: usize = size_of::<usize>();
    while control.len() >= CMSG_HEADER {
        let read_int = |offset: usize| {
            control
                .get(offset..offset + 4)
                .and_then(|bytes| bytes.try_into().ok())
                .map(i32::from_ne_bytes)
        };
        let Some(length) = control
            .get(..WORD)
            .and_then(|bytes| bytes.try_into().ok())
            .map(usize::from_ne_bytes)
        else {
            return;
        };
        let (Some(level), Some(kind)) = (read_int(WORD), read_int(WORD + 4)) else {
            return;
        };
        if length < CMSG_HEADER || length > control.len() {
            return;
        }
        let data = &control[CMSG_HEADER..length];
        if level == libc::IPPROTO_IPV6 {
            if kind == libc::IPV6_PKTINFO && data.len() >= 20 {
                let mut addr = [0_u8; 16];
                addr.copy_from_slice(&data[..16]);
                received.destination = Some(Ipv6Addr::from(addr));
                received.interface = data[16..20].try_into().ok().map(u32::from_ne_bytes);
            } else if kind == libc::IPV6_HOPLIMIT && data.len() >= 4 {
                received.hop_limit = data[..4]
                    .try_into()
                    .ok()
                    .map(i32::from_ne_bytes)
                    .and_then(|hops| u8::try_from(hops).ok());
            }
        }
        let advance = length.next_multiple_of(WORD);
        control = control.get(advance..).unwrap_or(&[]);
    }
}

/// Sends one ICMPv6 message to `destination` out of interface `ifindex`;
/// the kernel fills in the checksum and picks the source address.
pub(crate) fn send_icmpv6(
    fd: &OwnedFd,
    message: &[u8],
    destination: Ipv6Addr,
    ifindex: u32,
) -> io::Result<()> {
    let mut address = empty_sockaddr_in6(destination, ifindex);
    let mut iov = libc::iovec {
        iov_base: message.as_ptr().cast_mut().cast(),
        iov_len: message.len(),
    };
    // The packet-info message pins the outgoing interface even for a
    // global destination, which the scope id alone would not.
    let info = In6PktInfo {
        addr: [0; 16],
        ifindex,
    };
    let mut control = Control([0; 128]);
    let data_len = size_of::<In6PktInfo>();
    let cmsg_len = CMSG_HEADER + data_len;
    let space = CMSG_HEADER + data_len.next_multiple_of(size_of::<usize>());
    control.0[..size_of::<usize>()].copy_from_slice(&cmsg_len.to_ne_bytes());
    control.0[size_of::<usize>()..size_of::<usize>() + 4]
        .copy_from_slice(&libc::IPPROTO_IPV6.to_ne_bytes());
    control.0[size_of::<usize>() + 4..size_of::<usize>() + 8]
        .copy_from_slice(&libc::IPV6_PKTINFO.to_ne_bytes());
    control.0[CMSG_HEADER..CMSG_HEADER + 16].copy_from_slice(&info.addr);
    control.0[CMSG_HEADER + 16..CMSG_HEADER + 20].copy_from_slice(&info.ifindex.to_ne_bytes());
    // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_name = std::ptr::from_mut(&mut address).cast();
    header.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.0.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: every pointer in `header` refers to a live local value of the
    // stated length for the whole call; the kernel only reads them.
    let sent =
        check_len(unsafe { libc::sendmsg(fd.as_raw_fd(), &raw const header, libc::MSG_DONTWAIT) })?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp6_filter_blocks_everything_but_one_type() {
        let filter = icmp6_filter_passing(135);
        for kind in 0..=255_u8 {
            let blocked = filter[usize::from(kind >> 5)] & (1 << (kind & 31)) != 0;
            assert_eq!(blocked, kind != 135, "type {kind}");
        }
    }

    #[test]
    fn parses_packet_info_and_hop_limit() {
        let mut control = Vec::new();
        let mut push = |kind: libc::c_int, data: &[u8]| {
            let len = CMSG_HEADER + data.len();
            control.extend_from_slice(&len.to_ne_bytes());
            control.extend_from_slice(&libc::IPPROTO_IPV6.to_ne_bytes());
            control.extend_from_slice(&kind.to_ne_bytes());
            control.resize(control.len() + CMSG_HEADER - size_of::<usize>() - 8, 0);
            control.extend_from_slice(data);
            control.resize(control.len().next_multiple_of(size_of::<usize>()), 0);
        };
        let destination = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0xc8);
        let mut info = destination.octets().to_vec();
        info.extend_from_slice(&7_u32.to_ne_bytes());
        push(libc::IPV6_PKTINFO, &info);
        push(libc::IPV6_HOPLIMIT, &255_i32.to_ne_bytes());
        let mut received = Received {
            len: 0,
            source: Ipv6Addr::UNSPECIFIED,
            destination: None,
            interface: None,
            hop_limit: None,
        };
        parse_control(&control, &mut received);
        assert_eq!(received.destination, Some(destination));
        assert_eq!(received.interface, Some(7));
        assert_eq!(received.hop_limit, Some(255));
        // Truncated or garbage control data is ignored, never a panic.
        for cut in 0..control.len() {
            parse_control(&control[..cut], &mut received);
        }
        parse_control(&[0xff; 40], &mut received);
    }
}

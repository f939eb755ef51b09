//! Wire formats the speaker receives and sends: ARP over Ethernet for IPv4
//! ([`arp`]) and neighbor discovery over ICMPv6 for IPv6 ([`ndp`]).
//!
//! Everything here is pure: bytes in, typed values or bytes out. Decoders
//! never panic on hostile input (they are fuzzed, see `speaker/fuzz/`);
//! anything the responder must not answer is a typed [`DecodeError`].

pub mod arp;
mod error;
pub mod ndp;

pub use error::DecodeError;

/// An Ethernet (EUI-48) hardware address.
pub use pnet_base::MacAddr;

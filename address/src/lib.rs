//! Address arithmetic for FerroLB pools.
//!
//! An `IPAddressPool` lists entries such as `198.18.0.0/28`, `198.18.0.10-198.18.0.20`,
//! `2001:db8::/64` or a single `198.18.0.7`. This crate turns those strings into typed,
//! normalised [`IpRange`]s and [`AddressSet`]s whose sizes are exact at any prefix length:
//! every count is a `u128`, so a `/48` or `/64` IPv6 pool is as easy to count as a `/28`.
//!
//! Addresses of both families are handled as `u128` offsets in one numeric space per
//! family ([`Family`]); IPv4 addresses simply occupy the low 32 bits. That keeps interval
//! arithmetic identical for both families and lets callers build range structures
//! without caring which family they hold.
//!
//! The crate has no Kubernetes dependency: the controller, the speaker and the
//! migration tool all use it, and the fuzz target exercises it alone.

mod error;
mod family;
mod parse;
mod range;
mod set;

pub use error::AddressError;
pub use family::{Family, from_bits, to_bits};
pub use parse::parse_entry;
pub use range::IpRange;
pub use set::AddressSet;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::family::{Family, from_bits, to_bits};

/// An inclusive range of addresses of one family.
///
/// Invariants: `first <= last <= family.max()`, and the range is never the entire IPv6
/// space, so [`IpRange::size`] always fits in a `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    family: Family,
    first: u128,
    last: u128,
}

impl IpRange {
    /// The range `first..=last` of `family`, or `None` when the bounds are reversed,
    /// out of the family's space, or cover all of IPv6.
    pub fn from_bits(family: Family, first: u128, last: u128) -> Option<Self> {
        let whole_v6 = family == Family::V6 && first == 0 && last == u128::MAX;
        (first <= last && last <= family.max() && !whole_v6).then_some(Self {
            family,
            first,
            last,
        })
    }

    /// The range between two addresses, or `None` when their families differ, the
    /// bounds are reversed or the range is all of IPv6.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<Self> {
        let (family, a) = to_bits(first);
        let (other, b) = to_bits(last);
        if family != other {
            return None;
        }
        Self::from_bits(family, a, b)
    }

    /// The range holding exactly one address.
    pub fn single(ip: IpAddr) -> Self {
        let (family, bits) = to_bits(ip);
        Self {
            family,
            first: bits,
            last: bits,
        }
    }

    /// The addresses of a network (network and broadcast addresses included), or
    /// `None` for `::/0`.
    pub fn from_net(net: IpNet) -> Option<Self> {
        Self::new(net.network(), net.broadcast())
    }

    /// The family of every address in the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The lowest address.
    pub fn first(&self) -> IpAddr {
        from_bits(self.family, self.first)
    }

    /// The highest address.
    pub fn last(&self) -> IpAddr {
        from_bits(self.family, self.last)
    }

    /// The lowest address as an offset.
    pub fn first_bits(&self) -> u128 {
        self.first
    }

    /// The highest address as an offset.
    pub fn last_bits(&self) -> u128 {
        self.last
    }

    /// The exact number of addresses in the range.
    pub fn size(&self) -> u128 {
        // Cannot overflow: the whole IPv6 space is excluded by construction.
        self.last - self.first + 1
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (family, bits) = to_bits(ip);
        family == self.family && self.first <= bits && bits <= self.last
    }

    /// The addresses both ranges hold, if any.
    pub fn intersection(&self, other: &IpRange) -> Option<IpRange> {
        if self.family != other.family {
            return None;
        }
        Self::from_bits(
            self.family,
            self.first.max(other.first),
            self.last.min(other.last),
        )
    }

    /// Whether the ranges share at least one address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.intersection(other).is_some()
    }

    /// The prefix length when the range is exactly one CIDR block.
    fn prefix_len(&self) -> Option<u8> {
        let size = self.size();
        if !size.is_power_of_two() || !self.first.is_multiple_of(size) {
            return None;
        }
        // size = 2^(bits - len); trailing_zeros fits in u8 as it is at most 127.
        Some(self.family.bits() - size.trailing_zeros() as u8)
    }
}

/// Ranges print in the shortest form a pool entry accepts: a single IP, a CIDR when the
/// range is exactly one block, else `first-last`.
impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            return write!(f, "{}", self.first());
        }
        match self.prefix_len() {
            Some(len) => write!(f, "{}/{}", self.first(), len),
            None => write!(f, "{}-{}", self.first(), self.last()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sizes_are_exact_for_large_ipv6_blocks() {
        let r = IpRange::from_net("2001:db8::/48".parse().unwrap()).unwrap();
        assert_eq!(r.size(), 1u128 << 80);
        let r = IpRange::from_net("::/1".parse().unwrap()).unwrap();
        assert_eq!(r.size(), 1u128 << 127);
        assert!(IpRange::from_net("::/0".parse().unwrap()).is_none());
        let r = IpRange::from_net("0.0.0.0/0".parse().unwrap()).unwrap();
        assert_eq!(r.size(), 1u128 << 32);
    }

    #[test]
    fn rejects_reversed_and_mixed() {
        assert!(IpRange::new(ip("198.18.0.9"), ip("198.18.0.1")).is_none());
        assert!(IpRange::new(ip("198.18.0.1"), ip("2001:db8::1")).is_none());
    }

    #[test]
    fn displays_shortest_form() {
        let show = |a: &str, b: &str| IpRange::new(ip(a), ip(b)).unwrap().to_string();
        assert_eq!(show("198.18.0.7", "198.18.0.7"), "198.18.0.7");
        assert_eq!(show("198.18.0.0", "198.18.0.15"), "198.18.0.0/28");
        assert_eq!(show("198.18.0.1", "198.18.0.15"), "198.18.0.1-198.18.0.15");
        assert_eq!(show("2001:db8::", "2001:db8::ffff"), "2001:db8::/112");
    }

    #[test]
    fn intersection() {
        let a = IpRange::new(ip("198.18.0.0"), ip("198.18.0.10")).unwrap();
        let b = IpRange::new(ip("198.18.0.10"), ip("198.18.0.20")).unwrap();
        let c = IpRange::new(ip("198.18.0.11"), ip("198.18.0.20")).unwrap();
        assert_eq!(a.intersection(&b), Some(IpRange::single(ip("198.18.0.10"))));
        assert!(!a.overlaps(&c));
        assert!(a.contains(ip("198.18.0.10")) && !a.contains(ip("2001:db8::")));
    }
}

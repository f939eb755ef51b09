//! An address as configured on an interface: the IP and its prefix length,
//! which together say which subnet the interface is on (`198.18.0.11/24`
//! is on 198.18.0.0/24). Speakers publish them in their SpeakerStatus in
//! this text form; eligibility reads them back to tell whether a node can
//! answer for an IP ([`crate::reachability`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An interface address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceAddress {
    ip: IpAddr,
    prefix_len: u8,
}

/// Why a published interface address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an interface address with a prefix length, e.g. 198.18.0.11/24")]
pub struct AddressSyntax(pub String);

impl InterfaceAddress {
    /// `ip/prefix_len`, or `None` when the prefix is longer than the family
    /// allows.
    #[must_use]
    pub fn new(ip: IpAddr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= bits(ip)).then_some(Self { ip, prefix_len })
    }

    /// The interface's own IP.
    #[must_use]
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The prefix length.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is on this address's subnet (of the same family, and
    /// equal to it in the first `prefix_len` bits).
    #[must_use]
    pub fn on_subnet(&self, ip: IpAddr) -> bool {
        let shift = |len: u8, max: u8| u32::from(max - len);
        match (self.ip, ip) {
            (IpAddr::V4(own), IpAddr::V4(other)) => {
                let mask = u32::MAX
                    .checked_shl(shift(self.prefix_len, 32))
                    .unwrap_or(0);
                u32::from(own) & mask == u32::from(other) & mask
            }
            (IpAddr::V6(own), IpAddr::V6(other)) => {
                let mask = u128::MAX
                    .checked_shl(shift(self.prefix_len, 128))
                    .unwrap_or(0);
                u128::from(own) & mask == u128::from(other) & mask
            }
            _ => false,
        }
    }

    /// Whether the address is a global one worth publishing: not IPv6
    /// link-local (fe80::/10), which every interface has and no Service IP
    /// is ever on, nor loopback.
    #[must_use]
    pub fn is_global(&self) -> bool {
        match self.ip {
            IpAddr::V4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
            IpAddr::V6(ip) => {
                !ip.is_loopback() && !ip.is_unspecified() && !ip.is_unicast_link_local()
            }
        }
    }
}

fn bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

impl FromStr for InterfaceAddress {
    type Err = AddressSyntax;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || AddressSyntax(s.to_owned());
        let (ip, len) = s.split_once('/').ok_or_else(invalid)?;
        let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
        let len: u8 = len.parse().map_err(|_| invalid())?;
        Self::new(ip, len).ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn addr(s: &str) -> InterfaceAddress {
        s.parse().unwrap()
    }

    #[test]
    fn subnets() {
        let cases = [
            ("198.18.0.11/24", "198.18.0.200", true),
            ("198.18.0.11/24", "198.18.1.200", false),
            ("198.18.0.11/32", "198.18.0.11", true),
            ("198.18.0.11/32", "198.18.0.12", false),
            ("198.18.0.11/0", "198.19.255.1", true),
            ("198.18.4.1/22", "198.18.7.255", true),
            ("198.18.4.1/22", "198.18.8.0", false),
            ("2001:db8::11/64", "2001:db8::c8", true),
            ("2001:db8::11/64", "2001:db8:0:1::c8", false),
            ("2001:db8::11/0", "2001:db9::1", true),
            ("2001:db8::11/128", "2001:db8::11", true),
            ("198.18.0.11/24", "2001:db8::1", false),
            ("2001:db8::11/0", "198.18.0.1", false),
        ];
        for (address, ip, want) in cases {
            assert_eq!(
                addr(address).on_subnet(ip.parse().unwrap()),
                want,
                "{ip} on {address}"
            );
        }
    }

    #[test]
    fn syntax() {
        for bad in [
            "198.18.0.11",
            "198.18.0.11/33",
            "2001:db8::1/129",
            "x/24",
            "198.18.0.11/-1",
            "",
        ] {
            assert!(bad.parse::<InterfaceAddress>().is_err(), "{bad}");
        }
        assert_eq!(addr("198.18.0.11/24").to_string(), "198.18.0.11/24");
        assert!(!addr("fe80::1/64").is_global());
        assert!(addr("2001:db8::1/64").is_global());
        assert!(addr("198.18.0.1/24").is_global());
    }

    proptest! {
        #[test]
        fn text_round_trips(v4 in any::<u32>(), v6 in any::<u128>(), a in 0u8..=32, b in 0u8..=128) {
            for address in [
                InterfaceAddress::new(IpAddr::V4(Ipv4Addr::from(v4)), a).unwrap(),
                InterfaceAddress::new(IpAddr::V6(Ipv6Addr::from(v6)), b).unwrap(),
            ] {
                prop_assert_eq!(address.to_string().parse::<InterfaceAddress>().unwrap(), address);
                prop_assert!(address.on_subnet(address.ip()));
            }
        }

        #[test]
        fn a_longer_prefix_is_a_smaller_subnet(v4 in any::<u32>(), other in any::<u32>(), len in 0u8..32) {
            let ip = IpAddr::V4(Ipv4Addr::from(v4));
            let other = IpAddr::V4(Ipv4Addr::from(other));
            let wide = InterfaceAddress::new(ip, len).unwrap();
            let narrow = InterfaceAddress::new(ip, len + 1).unwrap();
            prop_assert!(!narrow.on_subnet(other) || wide.on_subnet(other));
        }
    }
}

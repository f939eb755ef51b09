use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: offsets use the low 32 bits.
    V4,
    /// IPv6: offsets use all 128 bits.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The largest offset of the family.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address as its family and numeric offset.
pub fn to_bits(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// The address at `bits` in `family`. IPv4 offsets above `u32::MAX` are truncated to
/// their low 32 bits; callers only pass offsets taken from ranges of that family.
pub fn from_bits(family: Family, bits: u128) -> IpAddr {
    match family {
        // Truncation is intended: IPv4 offsets never exceed u32::MAX.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        for s in [
            "0.0.0.0",
            "198.18.0.1",
            "255.255.255.255",
            "::",
            "2001:db8::1",
            "ffff::",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            let (family, bits) = to_bits(ip);
            assert_eq!(from_bits(family, bits), ip);
            assert!(bits <= family.max());
        }
    }
}

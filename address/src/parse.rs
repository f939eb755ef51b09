use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::AddressError;
use crate::range::IpRange;

/// Parses one pool entry: a CIDR (`198.18.0.0/28`), an inclusive same-family range
/// (`198.18.0.10-198.18.0.20`) or a single address (`198.18.0.7`).
///
/// The accepted syntax is exactly what the CRD's validation rules accept, so an entry
/// the API server stored parses here: no whitespace, no IPv6 zones, no IPv4-mapped IPv6
/// addresses, no host bits below a CIDR's prefix, and range ends in ascending order.
pub fn parse_entry(entry: &str) -> Result<IpRange, AddressError> {
    let owned = || entry.to_owned();
    if entry.trim().is_empty() {
        return Err(AddressError::EmptyEntry);
    }
    if entry.chars().any(char::is_whitespace) {
        return Err(AddressError::Whitespace { entry: owned() });
    }
    if entry.contains('%') {
        return Err(AddressError::Zone { entry: owned() });
    }
    if let Some((net, _)) = entry.split_once('/') {
        let ip = parse_ip(entry, net)?;
        let parsed: IpNet = entry
            .parse()
            .map_err(|_| AddressError::BadCidr { entry: owned() })?;
        if parsed.addr() != parsed.network() {
            return Err(AddressError::HostBitsSet {
                entry: owned(),
                suggestion: parsed.trunc().to_string(),
            });
        }
        debug_assert_eq!(ip, parsed.addr());
        return IpRange::from_net(parsed).ok_or(AddressError::WholeSpace { entry: owned() });
    }
    if let Some((start, end)) = entry.split_once('-') {
        let first = parse_ip(entry, start)?;
        let last = parse_ip(entry, end)?;
        if first.is_ipv4() != last.is_ipv4() {
            return Err(AddressError::MixedFamilies { entry: owned() });
        }
        if first > last {
            return Err(AddressError::Reversed {
                entry: owned(),
                suggestion: format!("{last}-{first}"),
            });
        }
        return IpRange::new(first, last).ok_or(AddressError::WholeSpace { entry: owned() });
    }
    parse_ip(entry, entry).map(IpRange::single)
}

fn parse_ip(entry: &str, part: &str) -> Result<IpAddr, AddressError> {
    let ip: IpAddr = part.parse().map_err(|_| AddressError::NotAnAddress {
        entry: entry.to_owned(),
        part: part.to_owned(),
    })?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(AddressError::Ipv4Mapped {
            entry: entry.to_owned(),
        });
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form() {
        let cases = [
            ("198.18.0.0/28", "198.18.0.0", "198.18.0.15", 16),
            ("198.18.0.7", "198.18.0.7", "198.18.0.7", 1),
            ("198.18.0.7/32", "198.18.0.7", "198.18.0.7", 1),
            ("198.18.0.10-198.18.0.20", "198.18.0.10", "198.18.0.20", 11),
            ("198.18.0.10-198.18.0.10", "198.18.0.10", "198.18.0.10", 1),
            ("2001:db8::/120", "2001:db8::", "2001:db8::ff", 256),
            ("2001:db8::1-2001:db8::3", "2001:db8::1", "2001:db8::3", 3),
            ("2001:db8::5", "2001:db8::5", "2001:db8::5", 1),
        ];
        for (entry, first, last, size) in cases {
            let r = parse_entry(entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(r.first().to_string(), first, "{entry}");
            assert_eq!(r.last().to_string(), last, "{entry}");
            assert_eq!(r.size(), size, "{entry}");
        }
        assert_eq!(parse_entry("2001:db8::/64").unwrap().size(), 1u128 << 64);
    }

    #[test]
    fn rejects_with_the_offending_entry() {
        use AddressError as E;
        type Check = fn(&AddressError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::EmptyEntry)),
            ("  ", |e| matches!(e, E::EmptyEntry)),
            ("198.18.0.1 - 198.18.0.5", |e| {
                matches!(e, E::Whitespace { .. })
            }),
            ("fe80::1%eth0", |e| matches!(e, E::Zone { .. })),
            ("198.18.0.256", |e| matches!(e, E::NotAnAddress { .. })),
            ("198.018.0.1", |e| matches!(e, E::NotAnAddress { .. })),
            ("garbage", |e| matches!(e, E::NotAnAddress { .. })),
            ("198.18.0.0/33", |e| matches!(e, E::BadCidr { .. })),
            ("198.18.0.0/", |e| matches!(e, E::BadCidr { .. })),
            ("198.18.0.0/x", |e| matches!(e, E::BadCidr { .. })),
            ("2001:db8::/129", |e| matches!(e, E::BadCidr { .. })),
            (
                "198.18.0.5/24",
                |e| matches!(e, E::HostBitsSet { suggestion, .. } if suggestion == "198.18.0.0/24"),
            ),
            ("198.18.0.1-2001:db8::1", |e| {
                matches!(e, E::MixedFamilies { .. })
            }),
            (
                "198.18.0.9-198.18.0.1",
                |e| matches!(e, E::Reversed { suggestion, .. } if suggestion == "198.18.0.1-198.18.0.9"),
            ),
            ("2001:db8::9-2001:db8::1", |e| {
                matches!(e, E::Reversed { .. })
            }),
            ("198.18.0.1-", |e| matches!(e, E::NotAnAddress { .. })),
            ("-198.18.0.1", |e| matches!(e, E::NotAnAddress { .. })),
            ("198.18.0.1-198.18.0.2-198.18.0.3", |e| {
                matches!(e, E::NotAnAddress { .. })
            }),
            ("::ffff:198.18.0.1", |e| matches!(e, E::Ipv4Mapped { .. })),
            ("::/0", |e| matches!(e, E::WholeSpace { .. })),
            ("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", |e| {
                matches!(e, E::WholeSpace { .. })
            }),
        ];
        for (entry, expected) in cases {
            let err = parse_entry(entry).expect_err(entry);
            assert!(expected(&err), "{entry:?} gave {err:?}");
            if !entry.trim().is_empty() {
                assert!(
                    err.to_string().contains(entry.trim()),
                    "{err} names {entry:?}"
                );
            }
        }
    }
}

use std::net::IpAddr;

use crate::error::AddressError;
use crate::family::{Family, to_bits};
use crate::parse::parse_entry;
use crate::range::IpRange;

/// The normalised addresses of a pool: disjoint, non-adjacent ranges sorted by family
/// (IPv4 first) and then by address. Overlapping or touching entries are merged, so two
/// pools' sets compare equal exactly when they hold the same addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddressSet {
    ranges: Vec<IpRange>,
}

impl AddressSet {
    /// Parses and normalises a pool's entries. On failure every rejected entry is
    /// reported, not just the first, so a user can fix them all in one edit.
    pub fn parse<'a, I>(entries: I) -> Result<Self, Vec<AddressError>>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut ranges = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            match parse_entry(entry) {
                Ok(range) => ranges.push(range),
                Err(e) => errors.push(e),
            }
        }
        if ranges.is_empty() && errors.is_empty() {
            errors.push(AddressError::NoEntries);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Self::from_ranges(ranges).map_err(|e| vec![e])
    }

    /// Normalises arbitrary ranges into a set. Fails only when the merged ranges cover
    /// the whole IPv6 space, whose size no counter holds.
    pub fn from_ranges(mut ranges: Vec<IpRange>) -> Result<Self, AddressError> {
        ranges.sort();
        let mut merged: Vec<IpRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            if let Some(prev) = merged.last_mut()
                && prev.family() == range.family()
                && range.first_bits() <= prev.last_bits().saturating_add(1)
            {
                let last = prev.last_bits().max(range.last_bits());
                *prev = IpRange::from_bits(prev.family(), prev.first_bits(), last).ok_or_else(
                    || AddressError::WholeSpace {
                        entry: format!("{}-{}", prev.first(), range.last()),
                    },
                )?;
                continue;
            }
            merged.push(range);
        }
        Ok(Self { ranges: merged })
    }

    /// The normalised ranges, IPv4 before IPv6, ascending.
    pub fn ranges(&self) -> &[IpRange] {
        &self.ranges
    }

    /// The ranges of one family, ascending.
    pub fn ranges_of(&self, family: Family) -> impl Iterator<Item = &IpRange> {
        self.ranges.iter().filter(move |r| r.family() == family)
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether the set holds any address of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges_of(family).next().is_some()
    }

    /// The exact number of addresses of `family`. The ranges are disjoint and never
    /// the whole space, so the sum always fits in a `u128`.
    pub fn size(&self, family: Family) -> u128 {
        self.ranges_of(family).map(IpRange::size).sum()
    }

    /// Whether `ip` is in the set, in O(log n) of the number of ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_containing(ip).is_some()
    }

    /// The range holding `ip`, if any.
    pub fn range_containing(&self, ip: IpAddr) -> Option<&IpRange> {
        let key = to_bits(ip);
        let idx = self
            .ranges
            .partition_point(|r| (r.family(), r.last_bits()) < key);
        self.ranges.get(idx).filter(|r| r.contains(ip))
    }

    /// The first range of addresses that both sets hold, if any.
    pub fn first_overlap(&self, other: &AddressSet) -> Option<IpRange> {
        let (mut i, mut j) = (0, 0);
        while let (Some(a), Some(b)) = (self.ranges.get(i), other.ranges.get(j)) {
            if let Some(common) = a.intersection(b) {
                return Some(common);
            }
            if (a.family(), a.last_bits()) < (b.family(), b.last_bits()) {
                i += 1;
            } else {
                j += 1;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(entries: &[&str]) -> AddressSet {
        AddressSet::parse(entries.iter().copied()).unwrap()
    }

    #[test]
    fn merges_overlapping_and_adjacent_entries() {
        let s = set(&[
            "198.18.0.8-198.18.0.20",
            "198.18.0.0/28",
            "198.18.0.21",
            "2001:db8::/64",
        ]);
        let shown: Vec<String> = s.ranges().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["198.18.0.0-198.18.0.21", "2001:db8::/64"]);
        assert_eq!(s.size(Family::V4), 22);
        assert_eq!(s.size(Family::V6), 1u128 << 64);
    }

    #[test]
    fn reports_every_bad_entry() {
        let errs = AddressSet::parse(["198.18.0.1", "nope", "198.18.0.9-198.18.0.1"]).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            AddressSet::parse([]).unwrap_err(),
            vec![AddressError::NoEntries]
        );
    }

    #[test]
    fn two_halves_of_ipv6_are_too_big() {
        let errs = AddressSet::parse(["::/1", "8000::/1"]).unwrap_err();
        assert!(matches!(errs[0], AddressError::WholeSpace { .. }));
    }

    #[test]
    fn overlap_between_pools() {
        let a = set(&["198.18.0.0/28", "2001:db8::/120"]);
        let b = set(&["198.18.1.0/28", "2001:db8::80-2001:db8::1ff"]);
        assert_eq!(
            a.first_overlap(&b).map(|r| r.to_string()).as_deref(),
            Some("2001:db8::80/121")
        );
        assert_eq!(a.first_overlap(&set(&["198.18.2.0/24"])), None);
    }

    fn arb_v4_range() -> impl Strategy<Value = IpRange> {
        (any::<u32>(), 0u32..4096).prop_map(|(start, len)| {
            let end = start.saturating_add(len);
            IpRange::from_bits(Family::V4, start.into(), end.into()).unwrap()
        })
    }

    fn arb_v6_range() -> impl Strategy<Value = IpRange> {
        (any::<u128>(), any::<u128>()).prop_filter_map("not the whole space", |(a, b)| {
            IpRange::from_bits(Family::V6, a.min(b), a.max(b))
        })
    }

    proptest! {
        #[test]
        fn normalised_sets_are_sorted_disjoint_and_keep_every_address(
            ranges in prop::collection::vec(prop_oneof![arb_v4_range(), arb_v6_range()], 1..20),
            probes in prop::collection::vec(any::<u32>(), 16),
        ) {
            let Ok(s) = AddressSet::from_ranges(ranges.clone()) else { return Ok(()); };
            for pair in s.ranges().windows(2) {
                let (a, b) = (pair[0], pair[1]);
                prop_assert!(
                    a.family() < b.family() || a.last_bits().saturating_add(1) < b.first_bits(),
                    "{a} and {b} should have been merged"
                );
            }
            for r in &ranges {
                prop_assert!(s.contains(r.first()) && s.contains(r.last()));
            }
            for p in probes {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(p));
                prop_assert_eq!(s.contains(ip), ranges.iter().any(|r| r.contains(ip)));
            }
        }

        #[test]
        fn display_parses_back_to_the_same_range(r in prop_oneof![arb_v4_range(), arb_v6_range()]) {
            let shown = r.to_string();
            // Mapped-looking IPv6 addresses are rejected on purpose; skip that corner.
            match parse_entry(&shown) {
                Ok(parsed) => prop_assert_eq!(parsed, r),
                Err(AddressError::Ipv4Mapped { .. }) => {}
                Err(e) => prop_assert!(false, "{shown}: {e}"),
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = parse_entry(&s);
        }

        #[test]
        fn cidr_sizes_are_exact(bits in any::<u128>(), len in 1u8..=128) {
            let net = ipnet::Ipv6Net::new(bits.into(), len).unwrap().trunc();
            let r = parse_entry(&net.to_string()).unwrap();
            prop_assert_eq!(r.size(), 1u128 << (128 - u32::from(len)));
        }
    }
}

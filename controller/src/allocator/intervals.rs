//! Sets of offsets as sorted, disjoint, inclusive intervals `(first, last)`.
//!
//! Reserved ranges and never-used addresses are both interval sets; splitting one by
//! the other costs the number of intervals, never the number of addresses, so a `/64`
//! pool holding a reserved `/16` is as cheap as a `/28`.

/// Sorts intervals and merges the ones that overlap or touch.
pub(crate) fn normalise(mut intervals: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    intervals.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
    for (first, last) in intervals {
        if let Some(prev) = merged.last_mut()
            && first <= prev.1.saturating_add(1)
        {
            prev.1 = prev.1.max(last);
            continue;
        }
        merged.push((first, last));
    }
    merged
}

/// Splits normalised `set` into the parts outside and inside normalised `cut`, in one
/// pass over both.
pub(crate) fn split(set: &[(u128, u128)], cut: &[(u128, u128)]) -> Split {
    let mut outside = Vec::new();
    let mut inside = Vec::new();
    let mut j = 0;
    for &(first, last) in set {
        // Cut intervals entirely below this one never matter again.
        while cut.get(j).is_some_and(|c| c.1 < first) {
            j += 1;
        }
        // The lowest offset of this interval not yet placed on either side.
        let mut from = Some(first);
        for &(cf, cl) in cut.get(j..).unwrap_or_default() {
            let Some(f) = from else { break };
            if cf > last {
                break;
            }
            if cf > f {
                outside.push((f, cf - 1));
            }
            let end = cl.min(last);
            inside.push((f.max(cf), end));
            from = (end < last).then(|| end + 1);
        }
        if let Some(f) = from {
            outside.push((f, last));
        }
    }
    Split { outside, inside }
}

/// The two parts of [`split`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// What `set` holds and `cut` does not, normalised.
    pub(crate) outside: Vec<(u128, u128)>,
    /// What both hold, normalised.
    pub(crate) inside: Vec<(u128, u128)>,
}

/// Whether normalised `set` holds `bits`, in O(log n).
pub(crate) fn holds(set: &[(u128, u128)], bits: u128) -> bool {
    let i = set.partition_point(|i| i.1 < bits);
    set.get(i).is_some_and(|i| i.0 <= bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalise_merges_overlapping_and_touching() {
        let got = normalise(vec![(10, 12), (0, 3), (4, 5), (11, 20), (30, 30)]);
        assert_eq!(got, [(0, 5), (10, 20), (30, 30)]);
        assert_eq!(normalise(vec![(0, u128::MAX), (5, 6)]), [(0, u128::MAX)]);
    }

    #[test]
    fn split_cuts_at_every_edge() {
        let s = split(&[(0, 9), (20, 29)], &[(5, 22), (25, 25), (29, 40)]);
        assert_eq!(s.outside, [(0, 4), (23, 24), (26, 28)]);
        assert_eq!(s.inside, [(5, 9), (20, 22), (25, 25), (29, 29)]);
        let whole = split(&[(3, 7)], &[(0, 100)]);
        assert!(whole.outside.is_empty());
        assert_eq!(whole.inside, [(3, 7)]);
        let edge = split(&[(0, u128::MAX)], &[(u128::MAX, u128::MAX)]);
        assert_eq!(edge.outside, [(0, u128::MAX - 1)]);
    }

    fn arb_set() -> impl Strategy<Value = Vec<(u128, u128)>> {
        prop::collection::vec((0u128..64, 0u128..8), 0..6)
            .prop_map(|v| normalise(v.into_iter().map(|(f, n)| (f, f + n)).collect()))
    }

    proptest! {
        #[test]
        fn split_matches_membership(set in arb_set(), cut in arb_set()) {
            let s = split(&set, &cut);
            prop_assert_eq!(&normalise(s.outside.clone()), &s.outside);
            prop_assert_eq!(&normalise(s.inside.clone()), &s.inside);
            for bits in 0u128..80 {
                let in_set = holds(&set, bits);
                prop_assert_eq!(holds(&s.inside, bits), in_set && holds(&cut, bits), "{}", bits);
                prop_assert_eq!(holds(&s.outside, bits), in_set && !holds(&cut, bits), "{}", bits);
            }
        }
    }
}

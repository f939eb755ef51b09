//! MetalLB pool priorities as FerroLB priorities.
//!
//! Both try lower numbers first, but they differ at the edges: in MetalLB a priority
//! of 0 is the same as none (tried after every prioritised pool), while in FerroLB 0
//! is the first; and FerroLB refuses negative priorities. So 0 becomes unset, and when
//! some priority is negative every set priority is shifted up by the same amount (the
//! lowest becomes 0), which keeps their order and their ties. Should the shifted
//! numbers not fit a 32-bit integer, they are replaced by their rank instead.

use std::collections::BTreeSet;

/// How priorities were changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remap {
    /// Only zeros (if any) became unset; every other priority is unchanged.
    None,
    /// Every priority was lowered by the lowest one, which became 0.
    Shifted {
        /// The lowest priority found.
        lowest: i64,
    },
    /// Priorities were replaced by their rank among the distinct values.
    Ranked,
}

/// FerroLB priorities for MetalLB ones, in the same order, and how they were changed.
pub fn remap(priorities: &[Option<i64>]) -> (Vec<Option<i32>>, Remap) {
    let set: BTreeSet<i64> = priorities
        .iter()
        .flatten()
        .copied()
        .filter(|p| *p != 0)
        .collect();
    let fits = |v: i64| i32::try_from(v).is_ok();
    let how = match (set.first(), set.last()) {
        (Some(&min), Some(&max)) if min < 0 || !fits(max) => {
            if max.checked_sub(min).is_some_and(fits) {
                Remap::Shifted { lowest: min }
            } else {
                Remap::Ranked
            }
        }
        _ => Remap::None,
    };
    let ranks: Vec<i64> = set.into_iter().collect();
    let out = priorities
        .iter()
        .map(|p| {
            let p = p.filter(|p| *p != 0)?;
            let value = match how {
                Remap::None => Some(p),
                Remap::Shifted { lowest } => p.checked_sub(lowest),
                Remap::Ranked => ranks
                    .binary_search(&p)
                    .ok()
                    .and_then(|i| i64::try_from(i).ok()),
            };
            value.and_then(|v| i32::try_from(v).ok())
        })
        .collect();
    (out, how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_table() {
        type Case<'a> = (&'a str, &'a [Option<i64>], &'a [Option<i32>], Remap);
        let cases: &[Case<'_>] = &[
            ("nothing set", &[None, None], &[None, None], Remap::None),
            (
                "positive priorities are kept; 0 means unset in MetalLB",
                &[Some(10), Some(0), None, Some(5)],
                &[Some(10), None, None, Some(5)],
                Remap::None,
            ),
            (
                "a negative priority shifts every set one, keeping order and ties",
                &[Some(-5), Some(10), Some(10), Some(0), Some(-20)],
                &[Some(15), Some(30), Some(30), None, Some(0)],
                Remap::Shifted { lowest: -20 },
            ),
            (
                "a span wider than i32 falls back to ranks",
                &[
                    Some(i64::from(i32::MIN)),
                    Some(i64::from(i32::MAX)),
                    Some(-1),
                ],
                &[Some(0), Some(2), Some(1)],
                Remap::Ranked,
            ),
            (
                "a priority above i32 also ranks",
                &[Some(1), Some(5_000_000_000)],
                &[Some(0), Some(1)],
                Remap::Ranked,
            ),
        ];
        for (name, input, want, how) in cases {
            let (got, got_how) = remap(input);
            assert_eq!(got, *want, "{name}");
            assert_eq!(got_how, *how, "{name}");
        }
    }

    #[test]
    fn order_is_preserved_for_any_input() {
        use proptest::prelude::*;
        proptest!(|(input in proptest::collection::vec(proptest::option::of(any::<i64>()), 0..12))| {
            let (out, _) = remap(&input);
            for (a, pa) in input.iter().zip(&out) {
                for (b, pb) in input.iter().zip(&out) {
                    if let (Some(a), Some(b), Some(pa), Some(pb)) = (a, b, pa, pb) {
                        prop_assert_eq!(a.cmp(b), pa.cmp(pb));
                        prop_assert!(*pa >= 0);
                    }
                    prop_assert_eq!(pa.is_some(), a.is_some_and(|v| v != 0));
                    let _ = pb;
                }
            }
        });
    }
}

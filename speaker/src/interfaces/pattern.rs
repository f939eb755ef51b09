//! Interface name patterns of `L2Advertisement.interfaces`: `*` matches any
//! run of characters (also none), `?` exactly one, everything else itself.
//! A name without wildcards is a pattern that matches only that name, so
//! `eth0` never selects `eth0.100`; `eth0.*` selects every VLAN on eth0,
//! `enp*` every predictable Ethernet name.

/// Whether `name` matches `pattern`.
///
/// Iterative, with one backtracking point (the last `*`): linear in
/// practice, and at most quadratic in the 15-character names Linux allows.
#[must_use]
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: its position in the pattern and
    // the name position it currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Whether `pattern` has wildcards, i.e. may match other names than itself.
#[must_use]
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("eth0", "eth0", true),
            ("eth0", "eth0.100", false),
            ("eth0", "eth1", false),
            ("eth0.*", "eth0.100", true),
            ("eth0.*", "eth0.", true),
            ("eth0.*", "eth0", false),
            ("eth0.*", "eth1.100", false),
            ("bond*", "bond0", true),
            ("bond*", "bond0.200", true),
            ("enp*s0", "enp3s0", true),
            ("enp*s0", "enp3s0f1", false),
            ("eth?", "eth7", true),
            ("eth?", "eth10", false),
            ("*", "anything", true),
            ("*", "", true),
            ("", "", true),
            ("", "eth0", false),
            ("*.100", "bond0.100", true),
            ("*.100", "bond0.1000", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(matches(pattern, name), want, "{pattern} vs {name}");
        }
        assert!(is_pattern("eth*"));
        assert!(is_pattern("eth?"));
        assert!(!is_pattern("eth0.100"));
    }

    /// A plain recursive matcher: slow but obviously right.
    fn reference(pattern: &[char], name: &[char]) -> bool {
        match (pattern.first(), name.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some('*'), _) => {
                reference(&pattern[1..], name)
                    || (!name.is_empty() && reference(pattern, &name[1..]))
            }
            (Some(_), None) => false,
            (Some(p), Some(n)) => (*p == '?' || p == n) && reference(&pattern[1..], &name[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(pattern in "[ab.*?]{0,8}", name in "[ab.]{0,10}") {
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            prop_assert_eq!(matches(&pattern, &name), reference(&p, &n));
        }

        #[test]
        fn a_name_matches_itself_only(name in "[a-z0-9.]{1,15}", other in "[a-z0-9.]{1,15}") {
            prop_assert!(matches(&name, &name));
            prop_assert_eq!(matches(&name, &other), name == other);
        }
    }
}

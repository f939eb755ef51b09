//! FerroLB names for MetalLB objects.
//!
//! MetalLB's objects are namespaced (and its ConfigMap-era pool names free text);
//! FerroLB's pools and advertisements are cluster-scoped DNS subdomains. A name that
//! is already valid and used in one namespace only is kept. A name used in several
//! namespaces becomes `<namespace>-<name>` in every one of them, so no namespace wins
//! silently. A name that is not a DNS subdomain is lower-cased and its other
//! characters replaced by `-`. A name still taken gets `-2`, `-3`, …: names kept as
//! written are settled first, then the rest in (namespace, name) order, so the result
//! never depends on input order.

use std::collections::{BTreeMap, BTreeSet};

use super::source::Origin;

/// Longest object name.
const MAX_NAME: usize = 253;

/// Chooses a FerroLB name for each origin; every name differs from the others.
pub fn assign<'a>(origins: impl IntoIterator<Item = &'a Origin>) -> BTreeMap<Origin, String> {
    let origins: BTreeSet<&Origin> = origins.into_iter().collect();
    let mut by_base: BTreeMap<String, Vec<&Origin>> = BTreeMap::new();
    for origin in &origins {
        by_base
            .entry(sanitize(&origin.name))
            .or_default()
            .push(origin);
    }
    // (qualified, origin) -> wanted name: names kept as written settle first.
    let mut wanted: BTreeMap<(bool, &Origin), String> = BTreeMap::new();
    for (base, users) in &by_base {
        let shared = users.len() > 1;
        for origin in users {
            let qualified = shared && !origin.namespace.is_empty();
            let name = if qualified {
                sanitize(&format!("{}-{base}", origin.namespace))
            } else {
                base.clone()
            };
            wanted.insert((qualified, origin), name);
        }
    }
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for ((_, origin), name) in &wanted {
        let mut n = 1;
        let name = loop {
            let candidate = if n == 1 {
                name.clone()
            } else {
                with_suffix(name, n)
            };
            if taken.insert(candidate.clone()) {
                break candidate;
            }
            n += 1;
        };
        out.insert((*origin).clone(), name);
    }
    out
}

/// `name` as a DNS subdomain: lower case, `[a-z0-9-]` labels separated by dots,
/// each starting and ending alphanumeric, at most 253 characters.
pub fn sanitize(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    let labels: Vec<&str> = mapped
        .split('.')
        .map(|l| l.trim_matches('-'))
        .filter(|l| !l.is_empty())
        .collect();
    let joined = labels.join(".");
    let cut = truncate(&joined, MAX_NAME);
    if cut.is_empty() {
        "pool".to_owned()
    } else {
        cut
    }
}

fn with_suffix(name: &str, n: usize) -> String {
    let suffix = format!("-{n}");
    format!("{}{suffix}", truncate(name, MAX_NAME - suffix.len()))
}

fn truncate(name: &str, max: usize) -> String {
    let mut cut: String = name.chars().take(max).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(origins: &[(&str, &str)]) -> Vec<String> {
        let origins: Vec<Origin> = origins.iter().map(|(n, m)| Origin::new(*n, *m)).collect();
        let out = assign(&origins);
        origins.iter().map(|o| out[o].clone()).collect()
    }

    #[test]
    fn naming_table() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (
                "unique names are kept",
                &[("metallb-system", "prod"), ("metallb-system", "lab")],
                &["prod", "lab"],
            ),
            (
                "a name in two namespaces is qualified in both",
                &[("team-b", "prod"), ("metallb-system", "prod"), ("x", "lab")],
                &["team-b-prod", "metallb-system-prod", "lab"],
            ),
            (
                "a qualified name that is taken gets a suffix, the existing one stays",
                &[("a", "prod"), ("b", "prod"), ("c", "a-prod")],
                &["a-prod-2", "b-prod", "a-prod"],
            ),
            (
                "free text becomes a DNS subdomain",
                &[
                    ("", "Production Pool"),
                    ("", "_edge_"),
                    ("", "..."),
                    ("", "v1.2"),
                ],
                &["production-pool", "edge", "pool", "v1.2"],
            ),
            (
                "names equal after sanitising are told apart by namespace",
                &[("a", "Prod"), ("b", "prod")],
                &["a-prod", "b-prod"],
            ),
            (
                "names equal after sanitising in one namespace get suffixes",
                &[("a", "Prod"), ("a", "prod")],
                &["a-prod", "a-prod-2"],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(names(input), *want, "{name}");
        }
    }

    #[test]
    fn the_result_does_not_depend_on_input_order() {
        let a = names(&[("a", "p"), ("b", "p"), ("c", "p")]);
        let mut b = names(&[("c", "p"), ("a", "p"), ("b", "p")]);
        b.rotate_left(1);
        assert_eq!(a, b);
    }

    #[test]
    fn long_names_stay_within_the_limit() {
        let long = "x".repeat(250);
        let got = names(&[("namespace", long.as_str()), ("other", long.as_str())]);
        for n in &got {
            assert!(n.len() <= MAX_NAME, "{}", n.len());
        }
        assert_ne!(got[0], got[1]);
    }
}

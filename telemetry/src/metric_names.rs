//! The names of every metric in a registry, including families that have no series
//! yet: `/metrics` leaves those out entirely, so the text output cannot list them.
//! For the tests that hold the documentation, the alerts and the dashboard to what
//! the binaries really register.

use prometheus_client::registry::Registry;

/// Every metric name registered in `registry`, in registration order, as registered
/// (a counter's samples add `_total`).
///
/// The registry does not expose its descriptors; its `Debug` output does, and the
/// test below notices if that ever changes.
pub fn registered_metric_names(registry: &Registry) -> Vec<String> {
    const MARK: &str = "Descriptor { name: \"";
    let debug = format!("{registry:?}");
    debug
        .split(MARK)
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The metric names a markdown table under `heading` (a whole line, e.g.
/// `### Speaker metrics`) lists: the backquoted first cell of each row, up to the
/// next heading.
pub fn documented_metric_names(markdown: &str, heading: &str) -> Vec<String> {
    let Some((_, section)) = markdown.split_once(&format!("\n{heading}\n")) else {
        return Vec::new();
    };
    let section = section.split("\n#").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The documented names that are not registered, and the registered names that are
/// not documented; a documented `x_total` stands for a registered counter `x`.
pub fn undocumented_metrics(
    registered: &[String],
    documented: &[String],
) -> (Vec<String>, Vec<String>) {
    let base = |name: &String| -> String {
        match name.strip_suffix("_total") {
            Some(b) if registered.iter().any(|r| r == b) => b.to_owned(),
            _ => name.clone(),
        }
    };
    let documented: Vec<String> = documented.iter().map(base).collect();
    let unknown = documented
        .iter()
        .filter(|d| !registered.contains(d))
        .cloned()
        .collect();
    let missing = registered
        .iter()
        .filter(|r| !documented.contains(r))
        .cloned()
        .collect();
    (unknown, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct Labels {
        pool: String,
    }

    #[test]
    fn lists_families_without_series_which_metrics_text_omits() {
        let mut registry = Registry::default();
        registry.register(
            "a_gauge",
            "with \"quotes\" in its help",
            Gauge::<i64>::default(),
        );
        registry.register("b_errors", "a family", Family::<Labels, Counter>::default());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("b_errors"), "the premise: {text}");
        assert_eq!(registered_metric_names(&registry), ["a_gauge", "b_errors"]);
    }

    #[test]
    fn reads_the_table_under_its_heading_only() {
        let docs = "# Ops\n\n### A metrics\n\n| metric | type |\n|---|---|\n\
                    | `a_total` | counter |\n| `a_gauge` | gauge |\n\n### B metrics\n\n\
                    | `b_x` | gauge |\n";
        let a = documented_metric_names(docs, "### A metrics");
        assert_eq!(a, ["a_total", "a_gauge"]);
        let registered = ["a".to_owned(), "a_gauge".to_owned(), "c".to_owned()];
        let (unknown, missing) = undocumented_metrics(&registered, &a);
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(missing, ["c"]);
        let (unknown, _) =
            undocumented_metrics(&registered, &documented_metric_names(docs, "### B metrics"));
        assert_eq!(unknown, ["b_x"]);
    }
}

//! `ferrolb_build_info`: which build of which component a series comes from, so a
//! dashboard can tell versions apart during a rollout and an alert can name the
//! build it fired on.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The metric's name.
pub const BUILD_INFO: &str = "ferrolb_build_info";

/// The FerroLB version this binary was built as.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (short hash), or `unknown`.
pub const REVISION: &str = env!("FERROLB_REVISION");

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
    component: String,
}

/// Registers `ferrolb_build_info`, always 1, labelled with the version, the
/// revision and `component` (`controller` or `speaker`).
pub fn register_build_info(registry: &mut Registry, component: &str) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels {
        version: VERSION.to_owned(),
        revision: REVISION.to_owned(),
        component: component.to_owned(),
    })
    .set(1);
    registry.register(
        BUILD_INFO,
        "Always 1; labels name the version, the git revision and the component",
        info,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_one_series_with_the_build() {
        let mut registry = Registry::default();
        register_build_info(&mut registry, "speaker");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            series,
            [format!(
                "ferrolb_build_info{{version=\"{VERSION}\",revision=\"{REVISION}\",component=\"speaker\"}} 1"
            )],
            "{text}"
        );
        assert!(!REVISION.is_empty());
        assert!(
            REVISION == "unknown" || REVISION.chars().all(|c| c.is_ascii_hexdigit()),
            "revision {REVISION:?} is neither a commit nor unknown"
        );
    }
}

//! The committed CRD YAML must be exactly what the Rust types generate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ferrolb_crds::{Target, render_crds};

#[test]
fn committed_crds_match_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (path, target) in [
        ("crds/ferrolb.io.crds.yaml", Target::Plain),
        ("charts/ferrolb/templates/crds.yaml", Target::Chart),
    ] {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        let generated = render_crds(target).expect("CRDs render");
        assert!(
            committed == generated,
            "{path} is out of date; run `cargo run -p ferrolb-crds --bin crdgen` and commit the result"
        );
    }
}

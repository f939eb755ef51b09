//! Writes the FerroLB CRD YAML into `crds/` and into the Helm chart, or with `--check`
//! fails when the committed files differ from what the Rust types generate.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferrolb_crds::{Target, render_crds};

/// Generate the FerroLB CustomResourceDefinitions from the Rust API types.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Repository root holding `crds/` and `charts/ferrolb/`.
    #[arg(long, env = "FERROLB_REPO_ROOT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    root: PathBuf,
    /// Do not write: exit non-zero when a committed file is out of date.
    #[arg(long)]
    check: bool,
}

/// The generated files, relative to the repository root.
const OUTPUTS: [(&str, Target); 2] = [
    ("crds/ferrolb.io.crds.yaml", Target::Plain),
    ("charts/ferrolb/templates/crds.yaml", Target::Chart),
];

fn main() -> Result<()> {
    let args = Args::parse();
    let mut stale = Vec::new();
    for (path, target) in OUTPUTS {
        let path = args.root.join(path);
        let rendered = render_crds(target).context("rendering the CRDs")?;
        let current = fs::read_to_string(&path).unwrap_or_default();
        if current == rendered {
            continue;
        }
        if args.check {
            stale.push(path.display().to_string());
        } else {
            fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated CRDs are out of date: {}; run `cargo run -p ferrolb-crds --bin crdgen`",
            stale.join(", ")
        );
    }
    Ok(())
}

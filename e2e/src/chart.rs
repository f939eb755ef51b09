//! FerroLB's Helm chart in the lab: where it is, the lab's helm, and handing
//! CRDs that were applied without Helm over to a release.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

use crate::lab::Lab;

/// The CRDs the chart installs (with `crds.enabled`).
pub const CRDS: [&str; 4] = [
    "ipaddresspools.ferrolb.io",
    "l2advertisements.ferrolb.io",
    "servicel2statuses.ferrolb.io",
    "speakerstatuses.ferrolb.io",
];

/// The chart's directory, `charts/ferrolb` in the repository.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb")
}

/// Runs the lab's helm with the lab's admin kubeconfig; fails only when helm
/// cannot be started (the caller judges its exit status).
pub fn helm(lab: &Lab, args: &[&str]) -> Result<Output> {
    Command::new(lab.tools().path("helm"))
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args(args)
        .output()
        .with_context(|| format!("cannot run helm {}", args.join(" ")))
}

/// Runs the lab's helm and returns its standard output; fails with helm's
/// message when it exits non-zero.
pub fn helm_ok(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = helm(lab, args)?;
    if !out.status.success() {
        bail!(
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Marks FerroLB's CRDs that already exist as belonging to `release` in
/// `namespace`, as Helm's adoption expects, so that installing the chart with
/// `crds.enabled` takes them over instead of failing on objects it did not
/// create (the end-to-end tests apply the CRDs with kubectl, and a release
/// uninstalled earlier leaves its CRDs behind on purpose).
pub fn adopt_crds(lab: &Lab, release: &str, namespace: &str) -> Result<()> {
    let kubectl = |args: &[&str]| -> Result<Output> {
        Command::new(lab.tools().path("kubectl"))
            .arg("--kubeconfig")
            .arg(lab.kubeconfig())
            .args(args)
            .output()
            .with_context(|| format!("cannot run kubectl {}", args.join(" ")))
    };
    let listed = kubectl(&["get", "crd", "-o", "name"])?;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let existing: Vec<&str> = CRDS
        .iter()
        .copied()
        .filter(|crd| {
            listed
                .lines()
                .any(|l| l == format!("customresourcedefinition.apiextensions.k8s.io/{crd}"))
        })
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let release_name = format!("meta.helm.sh/release-name={release}");
    let release_namespace = format!("meta.helm.sh/release-namespace={namespace}");
    let changes: [(&str, Vec<&str>); 2] = [
        ("label", vec!["app.kubernetes.io/managed-by=Helm"]),
        ("annotate", vec![&release_name, &release_namespace]),
    ];
    for (verb, pairs) in changes {
        // kubectl wants the objects before the key=value pairs.
        let mut args = vec![verb, "--overwrite", "crd"];
        args.extend(existing.iter().copied());
        args.extend(pairs);
        let out = kubectl(&args)?;
        if !out.status.success() {
            bail!(
                "cannot hand FerroLB's CRDs over to release {namespace}/{release}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

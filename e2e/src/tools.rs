//! The lab's tools, built from Go modules by `e2e/tools/build.sh` into a
//! cache outside the repository, keyed by the versions in `versions.env`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The version pins, compiled in so tests can check what runs.
const VERSIONS_ENV: &str = include_str!("../tools/versions.env");

/// The Kubernetes version the lab builds, e.g. `v1.36.3`.
pub fn kubernetes_version() -> Result<String> {
    pinned("KUBERNETES_VERSION")
}

/// A version pinned in `versions.env`.
pub fn pinned(key: &str) -> Result<String> {
    VERSIONS_ENV
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .with_context(|| format!("{key} is not pinned in e2e/tools/versions.env"))
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh")
}

/// The cache root (`FERROLB_LAB_CACHE`, by default `/var/cache/ferrolb-lab`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FERROLB_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferrolb-lab"))
}

/// Where the binaries of the pinned versions live (built or not).
pub fn bin_dir() -> Result<PathBuf> {
    let key = format!(
        "k8s-{}_etcd-{}_helm-{}",
        pinned("KUBERNETES_VERSION")?,
        pinned("ETCD_VERSION")?,
        pinned("HELM_VERSION")?
    );
    Ok(cache_dir().join("tools").join(key).join("bin"))
}

/// Whether the pinned tools are all built.
pub fn built() -> bool {
    bin_dir().is_ok_and(|b| b.parent().is_some_and(|o| o.join(".complete").is_file()))
}

/// Builds the tools unless cached (seconds when warm; see `e2e/README.md`
/// for the cold time) and returns the directory holding them.
pub fn ensure_built() -> Result<Tools> {
    let status = Command::new("bash")
        .arg(build_script())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run e2e/tools/build.sh")?;
    if !status.status.success() {
        bail!("building the lab tools failed: see the messages above");
    }
    let stdout = String::from_utf8_lossy(&status.stdout);
    let bin = stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .context("e2e/tools/build.sh printed no tool directory")?;
    Ok(Tools { bin })
}

/// The built tools.
#[derive(Clone, Debug)]
pub struct Tools {
    bin: PathBuf,
}

impl Tools {
    /// The tools of the pinned versions, if already built.
    pub fn cached() -> Result<Self> {
        if !built() {
            bail!("the lab tools are not built: run `cargo lab up` (or e2e/tools/build.sh)");
        }
        Ok(Self { bin: bin_dir()? })
    }

    /// The tools in `bin`.
    pub fn at(bin: &Path) -> Self {
        Self {
            bin: bin.to_owned(),
        }
    }

    /// The path of one tool (`etcd`, `kube-apiserver`, `kubectl`, `helm`, …).
    pub fn path(&self, tool: &str) -> PathBuf {
        self.bin.join(tool)
    }

    /// The directory holding the tools.
    pub fn dir(&self) -> &Path {
        &self.bin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned() {
        assert!(kubernetes_version().is_ok_and(|v| v.starts_with("v1.")));
        assert!(pinned("ETCD_VERSION").is_ok_and(|v| v.starts_with("v3.6.")));
        assert!(pinned("HELM_VERSION").is_ok_and(|v| v.starts_with("v3.")));
        assert!(pinned("NOPE").is_err());
    }
}

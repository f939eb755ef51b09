//! FerroLB's Helm chart in the lab: where it is, the lab's helm, a test's
//! release of it, handing CRDs that were applied without Helm over to a
//! release, and the chart's RBAC for tests that run FerroLB's binaries as
//! processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde::Deserialize as _;

use crate::harness::{kubectl, wait_for};
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

/// A test's release of the chart (or of a chart that bundles it) in a
/// namespace of its own: uninstalled, with its namespace and its speakers'
/// SpeakerStatus objects deleted, when dropped (also when the test fails).
#[derive(Debug)]
pub struct Release {
    lab: Lab,
    name: String,
    namespace: String,
    chart: String,
    /// `--set` pairs of every install and upgrade.
    set: Vec<String>,
}

impl Release {
    /// Release `name` of the chart in directory `chart`, in `namespace`, with
    /// `set` (helm `--set` pairs) on every install and upgrade; not installed
    /// yet. What an earlier run of it left is removed first, and its namespace
    /// waited out (helm cannot create objects in a terminating namespace).
    pub async fn prepare(
        lab: &Lab,
        name: &str,
        namespace: &str,
        chart: &Path,
        set: &[&str],
    ) -> Result<Self> {
        let release = Self {
            lab: lab.clone(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            chart: chart.to_string_lossy().into_owned(),
            set: set.iter().map(|&s| s.to_owned()).collect(),
        };
        release.remove();
        wait_for(
            &format!("namespace {namespace} of an earlier run to be deleted"),
            Duration::from_secs(60),
            || async {
                let phase = kubectl(
                    lab,
                    &[
                        "get",
                        "namespace",
                        namespace,
                        "-o",
                        "jsonpath={.status.phase}",
                        "--ignore-not-found",
                    ],
                    None,
                )?;
                Ok((phase != "Terminating").then_some(()))
            },
        )
        .await?;
        Ok(release)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `helm install`, waiting for the release's workloads; `extra` are
    /// `--set` pairs after the release's own.
    pub fn install(&self, extra: &[&str]) -> Result<()> {
        self.run("install", extra)
    }

    /// `helm upgrade`, waiting for the release's workloads; `extra` are
    /// `--set` pairs after the release's own.
    pub fn upgrade(&self, extra: &[&str]) -> Result<()> {
        self.run("upgrade", extra)
    }

    fn run(&self, verb: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec![
            verb,
            &self.name,
            &self.chart,
            "--namespace",
            &self.namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
        ];
        for set in self
            .set
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            args.extend(["--set", set]);
        }
        helm_ok(&self.lab, &args)?;
        Ok(())
    }

    /// `helm uninstall`, waiting for the release's objects to go; fails with
    /// helm's message.
    pub fn uninstall(&self) -> Result<()> {
        self.uninstall_with(&[])
    }

    fn uninstall_with(&self, flags: &[&str]) -> Result<()> {
        let mut args = vec![
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--wait",
        ];
        args.extend(flags);
        helm_ok(&self.lab, &args)?;
        Ok(())
    }

    /// The release's live pods of `component` (`controller`, `speaker`).
    pub async fn pods(&self, component: &str) -> Result<Vec<Pod>> {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.name
        );
        let list = Api::<Pod>::namespaced(self.lab.client().await?, &self.namespace)
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// Waits until the release runs `count` Ready pods of `component`.
    pub async fn wait_for_pods(&self, component: &str, count: usize) -> Result<Vec<Pod>> {
        wait_for(
            &format!("{count} Ready {component} pods of the release"),
            Duration::from_secs(120),
            || async {
                let live = self.pods(component).await?;
                Ok((live.len() == count && live.iter().all(ready)).then_some(live))
            },
        )
        .await
    }

    /// Uninstalls whatever is installed under the release's name and deletes
    /// its namespace (without waiting) and its speakers' SpeakerStatus objects
    /// (cluster-scoped and written by the speakers, not by Helm).
    fn remove(&self) {
        let _ = self.uninstall_with(&["--ignore-not-found"]);
        let _ = kubectl(
            &self.lab,
            &[
                "delete",
                "namespace",
                &self.namespace,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        let _ = kubectl(
            &self.lab,
            &[
                "delete",
                "speakerstatuses",
                "-l",
                &format!("ferrolb.io/instance={}", self.name),
                "--ignore-not-found",
            ],
            None,
        );
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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

/// A FerroLB component with its own ServiceAccount in the chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `ferrolb-controller` (the Deployment).
    Controller,
    /// `ferrolb-speaker` (the DaemonSet).
    Speaker,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Speaker => "speaker",
        }
    }
}

/// The kinds of the chart's identity and permissions.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// Token lifetime asked for a test's ServiceAccount credentials: longer than
/// any test or benchmark runs.
const TOKEN_SECONDS: i64 = 4 * 3600;

/// The chart's ServiceAccounts and RBAC objects for one release, rendered by
/// `helm template` and applied without the workloads, so that the end-to-end
/// tests run FerroLB's binaries as processes with exactly the permissions the
/// chart grants (and nothing from the admin kubeconfig). The objects are
/// deleted when dropped.
#[derive(Debug)]
pub struct ChartRbac {
    lab: Lab,
    namespace: String,
    service_accounts: Vec<String>,
    /// `(kind, namespace, name)` of every object applied.
    applied: Vec<(String, Option<String>, String)>,
}

impl ChartRbac {
    /// Renders the chart as release `release` in `namespace` (which must
    /// exist) with `set` (helm `--set` pairs), and applies its ServiceAccounts,
    /// (Cluster)Roles and (Cluster)RoleBindings.
    pub fn install(lab: &Lab, release: &str, namespace: &str, set: &[&str]) -> Result<Self> {
        let chart = dir();
        let chart = chart.to_string_lossy();
        let kube_version = crate::tools::kubernetes_version()?;
        let mut args = vec![
            "template",
            release,
            &chart,
            "--namespace",
            namespace,
            "--kube-version",
            &kube_version,
            "--set",
            "crds.enabled=false",
        ];
        for pair in set {
            args.extend(["--set", pair]);
        }
        let rendered = helm_ok(lab, &args)?;
        let mut objects = rbac_objects(&rendered)?;
        let mut applied = Vec::new();
        let mut service_accounts = Vec::new();
        for object in &mut objects {
            let field = |path: &str| object.pointer(path).and_then(|v| v.as_str());
            let kind = field("/kind").unwrap_or_default().to_owned();
            let name = field("/metadata/name").unwrap_or_default().to_owned();
            let cluster_scoped = kind.starts_with("Cluster");
            let ns = match field("/metadata/namespace") {
                Some(ns) => Some(ns.to_owned()),
                None if cluster_scoped => None,
                // What `helm install --namespace` does with the release's own objects.
                None => {
                    if let Some(meta) = object.get_mut("metadata") {
                        meta["namespace"] = namespace.into();
                    }
                    Some(namespace.to_owned())
                }
            };
            if kind == "ServiceAccount" {
                service_accounts.push(name.clone());
            }
            applied.push((kind, ns, name));
        }
        let rbac = Self {
            lab: lab.clone(),
            namespace: namespace.to_owned(),
            service_accounts,
            applied,
        };
        let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects });
        crate::harness::kubectl(lab, &["apply", "-f", "-"], Some(&list.to_string()))
            .context("the API server refused the chart's RBAC")?;
        Ok(rbac)
    }

    /// A kubeconfig with a fresh token of `component`'s ServiceAccount.
    pub async fn kubeconfig(&self, component: Component) -> Result<PathBuf> {
        let suffix = format!("-{}", component.name());
        let sa = self
            .service_accounts
            .iter()
            .find(|sa| sa.ends_with(&suffix))
            .with_context(|| format!("the chart renders no ServiceAccount *{suffix}"))?;
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "spec": { "audiences": [], "expirationSeconds": TOKEN_SECONDS }
        }))
        .context("cannot build a TokenRequest")?;
        let token = Api::<ServiceAccount>::namespaced(self.lab.client().await?, &self.namespace)
            .create_token_request(sa, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {}/{sa} failed", self.namespace))?
            .status
            .context("TokenRequest returned no status")?
            .token;
        let dir = self.lab.state.join("identities");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}-{sa}.kubeconfig", self.namespace));
        let user = format!("system:serviceaccount:{}:{sa}", self.namespace);
        crate::kubeconfig::write_token(
            &path,
            &crate::control_plane::server_url(),
            &self.lab.control_plane().pki(),
            &user,
            &token,
        )?;
        Ok(path)
    }
}

/// Whether the credentials in `kubeconfig` may `verb` `resource` (all
/// namespaces), as the API server's authorizer answers `kubectl auth can-i`.
pub fn can_i(lab: &Lab, kubeconfig: &Path, verb: &str, resource: &str) -> Result<bool> {
    let out = Command::new(lab.tools().path("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i", verb, resource, "--all-namespaces"])
        .output()
        .context("cannot run kubectl auth can-i")?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl auth can-i {verb} {resource}: {other:?} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

impl Drop for ChartRbac {
    fn drop(&mut self) {
        // Synchronous: drop runs in async tests and on panics.
        for (kind, namespace, name) in self.applied.iter().rev() {
            let mut args = vec!["delete", kind.as_str(), name.as_str(), "--ignore-not-found"];
            if let Some(ns) = namespace {
                args.extend(["--namespace", ns.as_str()]);
            }
            args.push("--wait=false");
            let _ = crate::harness::kubectl(&self.lab, &args, None);
        }
    }
}

/// The RBAC objects (kinds in [`RBAC_KINDS`]) of a multi-document YAML
/// stream, as JSON.
fn rbac_objects(rendered: &str) -> Result<Vec<serde_json::Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let value = serde_yaml::Value::deserialize(document).context("helm rendered bad YAML")?;
        if value.is_null() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::to_value(value).context("helm rendered YAML that is not JSON")?;
        if value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| RBAC_KINDS.contains(&k))
        {
            objects.push(value);
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_rbac_objects() {
        let rendered = "---\n# Source: a\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: r-speaker\n\
            ---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: r-speaker\n\
            ---\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: r\n  namespace: kube-system\n";
        let objects = rbac_objects(rendered).unwrap();
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds, ["ServiceAccount", "Role"]);
        assert_eq!(objects[1]["metadata"]["namespace"], "kube-system");
    }
}

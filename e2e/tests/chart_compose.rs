//! End-to-end checks that the Helm chart composes with what operators build
//! around it: as a dependency of a parent chart that sets `global:` values
//! (lint, render, install), with `nameOverride`/`fullnameOverride`, with the
//! controller's default topology spread, and with `helm test`, which must pass
//! on a working installation and fail, naming the problem, on a broken one.
//!
//! The installed release handles only its own load-balancer class and uses
//! ports of its own (27512, 27513, 27976), so it runs beside the other tests'
//! installations. It sets `crds.enabled=false`: the lab's CRDs belong to
//! other releases, and the subchart's CRD templates are rendered and linted
//! all the same.
//!
//! They skip without root or built tools unless `FERROLB_E2E` is set (as
//! `cargo lab test` does).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferrolb_e2e::agent::pod::pod_dir;
use ferrolb_e2e::chart;
use ferrolb_e2e::harness::{self, kubectl, wait_for};
use ferrolb_e2e::lab::Lab;
use ferrolb_e2e::tools;
use serde::Deserialize as _;
use serde_json::Value;
use tokio::sync::Mutex;

/// The parent chart's release and namespace.
const RELEASE: &str = "ferrolb-compose";
const NAMESPACE: &str = "ferrolb-compose";
/// The subchart's `fullnameOverride` in the parent's values.
const FULLNAME: &str = "compose-lb";
const CLASS: &str = "ferrolb.io/compose-test";

/// The tests that install take turns.
static CLUSTER: Mutex<()> = Mutex::const_new(());

/// The parent chart's values: globals FerroLB does not read, and FerroLB's
/// own values under the dependency's name.
fn parent_values() -> String {
    format!(
        "global:\n  environment: lab\n  imageRegistry: registry.example.com\n  labels:\n    team: network\n\
         ferrolb:\n  fullnameOverride: {FULLNAME}\n  loadBalancerClass: {CLASS}\n  crds:\n    enabled: false\n\
         \x20 controller:\n    metricsPort: 27512\n  speaker:\n    metricsPort: 27513\n    gossipPort: 27976\n\
         \x20 tests:\n    waitSeconds: 30\n"
    )
}

/// A parent chart in a temporary directory that depends on `charts/ferrolb`
/// through a `file://` repository, its dependency built with
/// `helm dependency build`; removed when dropped.
struct ParentChart {
    dir: PathBuf,
}

impl ParentChart {
    fn create(lab: &Lab) -> Result<Self> {
        // One directory per parent: the tests of this file run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ferrolb-parent-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("templates"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let parent = Self { dir };
        let ferrolb = chart::dir()
            .canonicalize()
            .context("cannot resolve the chart's directory")?;
        let ours: Value = serde_yaml::from_str(
            &std::fs::read_to_string(ferrolb.join("Chart.yaml"))
                .context("cannot read the chart's Chart.yaml")?,
        )
        .context("the chart's Chart.yaml is not YAML")?;
        let version = ours["version"]
            .as_str()
            .context("the chart's Chart.yaml has no version")?;
        let files = [
            (
                "Chart.yaml",
                format!(
                    "apiVersion: v2\nname: platform\ndescription: A platform chart that bundles FerroLB.\n\
                     type: application\nversion: 1.0.0\nappVersion: \"1.0.0\"\n\
                     icon: https://example.com/platform.png\nkubeVersion: \">=1.31.0-0\"\n\
                     dependencies:\n  - name: ferrolb\n    version: \"{version}\"\n    repository: \"file://{}\"\n",
                    ferrolb.display()
                ),
            ),
            ("values.yaml", parent_values()),
            // The parent's own object, reading the globals it shares.
            (
                "templates/platform.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-platform\n\
                 data:\n  environment: {{ .Values.global.environment | quote }}\n"
                    .to_owned(),
            ),
        ];
        for (name, text) in files {
            let path = parent.dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        chart::helm_ok(lab, &["dependency", "build", &parent.path()])?;
        Ok(parent)
    }

    fn path(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
}

impl Drop for ParentChart {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The objects of a multi-document YAML stream, as JSON.
fn objects(rendered: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let value = serde_yaml::Value::deserialize(document).context("helm rendered bad YAML")?;
        if !value.is_null() {
            objects.push(serde_json::to_value(value).context("YAML that is not JSON")?);
        }
    }
    Ok(objects)
}

fn field<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `helm template` of the chart itself as release `release` with `--set` pairs.
fn render(lab: &Lab, release: &str, sets: &[&str]) -> Result<Vec<Value>> {
    let chart = chart::dir().to_string_lossy().into_owned();
    let kube_version = tools::kubernetes_version()?;
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        "ns",
        "--kube-version",
        kube_version.as_str(),
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    objects(&chart::helm_ok(lab, &args)?)
}

#[tokio::test]
async fn a_parent_chart_with_global_values_lints_strict_and_renders() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let parent = ParentChart::create(lab)?;
    let path = parent.path();
    let out = chart::helm(lab, &["lint", "--strict", &path])?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && !text.contains("[WARNING]") && !text.contains("[ERROR]"),
        "helm lint --strict of the parent chart is not clean:\n{text}"
    );

    let kube_version = tools::kubernetes_version()?;
    let template = |extra: &[&str]| {
        let mut args = vec![
            "template",
            RELEASE,
            path.as_str(),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube_version.as_str(),
        ];
        args.extend(extra);
        chart::helm(lab, &args)
    };
    let out = template(&[])?;
    ensure!(
        out.status.success(),
        "the parent chart does not render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = objects(&String::from_utf8_lossy(&out.stdout))?;
    let names: BTreeSet<String> = rendered
        .iter()
        .map(|o| format!("{}/{}", field(o, "/kind"), field(o, "/metadata/name")))
        .collect();
    for expected in [
        "ConfigMap/ferrolb-compose-platform".to_owned(),
        format!("Deployment/{FULLNAME}-controller"),
        format!("DaemonSet/{FULLNAME}-speaker"),
        format!("Pod/{FULLNAME}-test"),
    ] {
        ensure!(
            names.contains(&expected),
            "the parent chart renders no {expected}: {names:?}"
        );
    }
    let configmap = rendered
        .iter()
        .find(|o| field(o, "/kind") == "ConfigMap")
        .context("no ConfigMap")?;
    ensure!(
        field(configmap, "/data/environment") == "lab",
        "the parent's own template did not see its globals: {configmap}"
    );

    // The schema stays strict below `global`: a misspelt FerroLB value set
    // through the parent is refused, naming it.
    let out = template(&["--set", "ferrolb.controller.replica=3"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("'replica' not allowed"),
        "a misspelt subchart value was not refused by name: {stderr}"
    );
    Ok(())
}

/// The names and references of one rendered release.
fn check_names(objects: &[Value], prefix: &str, name_label: &str) -> Result<()> {
    let mut names = BTreeSet::new();
    for object in objects {
        let kind = field(object, "/kind");
        let name = field(object, "/metadata/name");
        if kind == "CustomResourceDefinition" {
            continue;
        }
        ensure!(
            name.starts_with(&format!("{prefix}-")),
            "{kind}/{name} is not named {prefix}-…"
        );
        ensure!(
            field(object, "/metadata/labels/app.kubernetes.io~1name") == name_label,
            "{kind}/{name} is not labelled app.kubernetes.io/name={name_label}"
        );
        names.insert(format!("{kind}/{name}"));
    }
    // Every reference points at an object of the release.
    let has = |kind: &str, name: &str| names.contains(&format!("{kind}/{name}"));
    for object in objects {
        let kind = field(object, "/kind");
        let name = field(object, "/metadata/name");
        let pod = match kind {
            "Deployment" | "DaemonSet" => object.pointer("/spec/template/spec"),
            "Pod" => object.pointer("/spec"),
            _ => None,
        };
        if let Some(pod) = pod {
            let sa = field(pod, "/serviceAccountName");
            ensure!(
                has("ServiceAccount", sa),
                "{kind}/{name} runs as ServiceAccount {sa:?}, which the release does not create"
            );
        }
        if kind == "Deployment" || kind == "DaemonSet" {
            let selector = object
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .context("a workload without matchLabels")?;
            let labels = object
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .context("a pod template without labels")?;
            ensure!(
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{kind}/{name} does not select its own pods: {selector:?} vs {labels:?}"
            );
        }
        if kind.ends_with("RoleBinding") {
            let role_kind = field(object, "/roleRef/kind");
            let role = field(object, "/roleRef/name");
            ensure!(
                has(role_kind, role),
                "{kind}/{name} binds {role_kind}/{role}, which the release does not create"
            );
            for subject in object["subjects"].as_array().into_iter().flatten() {
                let sa = field(subject, "/name");
                ensure!(
                    has("ServiceAccount", sa),
                    "{kind}/{name} binds ServiceAccount {sa:?}, which the release does not create"
                );
            }
        }
        if kind == "Pod" {
            let args: Vec<&str> = object["spec"]["containers"][0]["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (flag, target) in [("--controller=", "Deployment"), ("--speaker=", "DaemonSet")] {
                let value = args
                    .iter()
                    .find_map(|a| a.strip_prefix(flag))
                    .with_context(|| format!("the test pod has no {flag}: {args:?}"))?;
                ensure!(
                    has(target, value),
                    "the test pod checks {target} {value}, which the release does not create"
                );
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn name_and_fullname_overrides_name_every_object_and_keep_references() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    // Defaults: "<release>-ferrolb-…".
    check_names(&render(lab, "edge", &[])?, "edge-ferrolb", "ferrolb")?;
    // nameOverride replaces the chart's name in names and in the name label.
    check_names(&render(lab, "r1", &["nameOverride=lb"])?, "r1-lb", "lb")?;
    // fullnameOverride replaces the whole prefix, with or without a class and
    // with the monitoring objects.
    check_names(
        &render(
            lab,
            "r1",
            &[
                "fullnameOverride=shared-lb",
                "loadBalancerClass=ferrolb.io/x",
                "monitoring.serviceMonitor.enabled=true",
            ],
        )?,
        "shared-lb",
        "ferrolb",
    )?;
    // Existing ServiceAccounts instead of the chart's: nothing refers to the
    // chart's names any more.
    let objects = render(
        lab,
        "r1",
        &[
            "controller.serviceAccount.create=false",
            "controller.serviceAccount.name=platform-controller",
            "speaker.serviceAccount.create=false",
            "speaker.serviceAccount.name=platform-speaker",
        ],
    )?;
    let accounts: Vec<&str> = objects
        .iter()
        .filter(|o| field(o, "/kind") == "ServiceAccount")
        .map(|o| field(o, "/metadata/name"))
        .filter(|n| n.ends_with("-controller") || n.ends_with("-speaker"))
        .collect();
    ensure!(
        accounts.is_empty(),
        "with serviceAccount.create=false the chart still creates {accounts:?}"
    );
    let subjects: BTreeSet<&str> = objects
        .iter()
        .filter(|o| field(o, "/kind").ends_with("RoleBinding"))
        .flat_map(|o| o["subjects"].as_array().into_iter().flatten())
        .map(|s| field(s, "/name"))
        .collect();
    ensure!(
        subjects.contains("platform-controller")
            && subjects.contains("platform-speaker")
            && !subjects.contains("r1-ferrolb-controller")
            && !subjects.contains("r1-ferrolb-speaker"),
        "the bindings name {subjects:?}"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_create_false_renders_no_rbac_object() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    // Whoever sets it grants the permissions themselves: the chart must not
    // create a single (Cluster)Role or binding, hooks included.
    let rbac: Vec<String> = render(lab, "r1", &["rbac.create=false"])?
        .iter()
        .filter(|o| {
            let kind = field(o, "/kind");
            kind.starts_with("Role") || kind.starts_with("ClusterRole")
        })
        .map(|o| format!("{}/{}", field(o, "/kind"), field(o, "/metadata/name")))
        .collect();
    ensure!(rbac.is_empty(), "rbac.create=false renders {rbac:?}");
    Ok(())
}

fn controller_deployment(objects: &[Value]) -> Result<&Value> {
    objects
        .iter()
        .find(|o| field(o, "/kind") == "Deployment")
        .context("no Deployment rendered")
}

#[tokio::test]
async fn controller_replicas_are_spread_over_nodes_by_default() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let rendered = render(lab, "spread", &[])?;
    let deployment = controller_deployment(&rendered)?;
    let constraints = deployment
        .pointer("/spec/template/spec/topologySpreadConstraints")
        .and_then(Value::as_array)
        .context("the controller has no topologySpreadConstraints by default")?;
    let by_node = constraints
        .iter()
        .find(|c| field(c, "/topologyKey") == "kubernetes.io/hostname")
        .context("no constraint spreads over kubernetes.io/hostname")?;
    ensure!(
        by_node["maxSkew"] == 1 && field(by_node, "/whenUnsatisfiable") == "ScheduleAnyway",
        "the spread is not a preference of skew 1: {by_node}"
    );
    ensure!(
        by_node.pointer("/labelSelector/matchLabels")
            == deployment.pointer("/spec/selector/matchLabels"),
        "the spread does not count the controller's own pods: {by_node}"
    );
    // Users can switch it off.
    let chart = chart::dir().to_string_lossy().into_owned();
    let kube_version = tools::kubernetes_version()?;
    let off = objects(&chart::helm_ok(
        lab,
        &[
            "template",
            "spread",
            &chart,
            "--kube-version",
            &kube_version,
            "--set-json",
            "controller.topologySpreadConstraints=[]",
        ],
    )?)?;
    ensure!(
        controller_deployment(&off)?
            .pointer("/spec/template/spec/topologySpreadConstraints")
            .is_none(),
        "controller.topologySpreadConstraints=[] still renders a constraint"
    );
    Ok(())
}

/// Installs the parent chart as the release: uninstalled, with its namespace
/// and its speakers' SpeakerStatus objects, when dropped.
async fn install_release(lab: &Lab, parent: &ParentChart) -> Result<chart::Release> {
    let release = chart::Release::prepare(lab, RELEASE, NAMESPACE, &parent.dir, &[]).await?;
    release.install(&[])?;
    Ok(release)
}

/// Runs `helm test` on the release: whether it passed, and helm's output.
fn helm_test(lab: &Lab) -> Result<(bool, String)> {
    let out = chart::helm(
        lab,
        &["test", RELEASE, "--namespace", NAMESPACE, "--timeout", "2m"],
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// What the release's test pod printed, as the node agent kept it.
fn test_log(lab: &Lab) -> Result<String> {
    let log = pod_dir(&lab.state, NAMESPACE, &format!("{FULLNAME}-test")).join("check.log");
    std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))
}

#[tokio::test]
async fn installs_as_a_subchart_and_helm_test_tells_working_from_broken() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _turn = CLUSTER.lock().await;
    let nodes = lab.nodes().len();
    let parent = ParentChart::create(lab)?;
    let release = install_release(lab, &parent).await?;

    // The subchart's objects carry the names the parent gave them, and run.
    for object in [
        format!("deployment/{FULLNAME}-controller"),
        format!("daemonset/{FULLNAME}-speaker"),
        "configmap/ferrolb-compose-platform".to_owned(),
    ] {
        kubectl(lab, &["get", &object, "-n", NAMESPACE, "-o", "name"], None)
            .with_context(|| format!("the parent release has no {object}"))?;
    }
    let controllers = release.wait_for_pods("controller", 2).await?;
    release.wait_for_pods("speaker", nodes).await?;
    // The default spread put the two replicas on two nodes.
    let on: BTreeSet<String> = controllers
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    ensure!(
        on.len() == 2,
        "both controller replicas run on {on:?}: the default spread did not apply"
    );

    // helm test passes on the working installation, and says why.
    let (passed, output) = helm_test(lab)?;
    ensure!(
        passed,
        "helm test failed on a working installation:\n{output}"
    );
    ensure!(
        output.contains(&format!("TEST SUITE:     {FULLNAME}-test"))
            && output.contains("Succeeded"),
        "helm test did not run the chart's test pod:\n{output}"
    );
    let log = test_log(lab)?;
    eprintln!("helm test, working installation:\n{log}");
    for line in [
        "ok   crds ".to_owned(),
        "ok   controller 2 of 2 replicas ready".to_owned(),
        format!("leads (Lease {NAMESPACE}/{FULLNAME}-controller renewed"),
        format!("ok   speakers   {nodes} of {nodes} speakers ready, each sees all {nodes}"),
        format!("FerroLB in namespace {NAMESPACE} works"),
    ] {
        ensure!(
            log.contains(&line),
            "the check's verdict lacks {line:?}:\n{log}"
        );
    }

    // Broken: the speakers are told to run on no node (a nodeSelector no node
    // matches). Nothing announces any IP now, and helm test says so.
    release.upgrade(&[
        "ferrolb.speaker.nodeSelector.ferrolb-compose-test=nowhere",
        "ferrolb.tests.waitSeconds=3",
    ])?;
    wait_for(
        "the release's speakers to be gone",
        Duration::from_secs(60),
        || async { Ok(release.pods("speaker").await?.is_empty().then_some(())) },
    )
    .await?;
    let (passed, output) = helm_test(lab)?;
    ensure!(
        !passed,
        "helm test passed with no speaker running:\n{output}"
    );
    let log = test_log(lab)?;
    eprintln!("helm test, no speaker running:\n{log}");
    ensure!(
        log.contains(&format!(
            "FAIL speakers   daemonset {NAMESPACE}/{FULLNAME}-speaker runs on no node, so no IP is announced"
        )) && log.contains("ok   leader"),
        "the failed check does not name the missing speakers (and only them):\n{log}"
    );
    let phase = kubectl(
        lab,
        &[
            "get",
            "pod",
            &format!("{FULLNAME}-test"),
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.status.phase}",
        ],
        None,
    )?;
    if phase != "Failed" {
        bail!("the failed test pod reports phase {phase:?}, not Failed");
    }
    drop(release);
    Ok(())
}

/// Cluster-scoped objects a test created, deleted when dropped.
struct Created {
    lab: Lab,
    objects: Vec<String>,
}

impl Drop for Created {
    fn drop(&mut self) {
        for object in &self.objects {
            let _ = kubectl(&self.lab, &["delete", object, "--ignore-not-found"], None);
        }
    }
}

#[tokio::test]
async fn users_with_view_read_ferrolb_kinds_but_write_none() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    // The chart's aggregated ClusterRole alone, as release "compose-view" renders it.
    let chart = chart::dir().to_string_lossy().into_owned();
    let kube_version = tools::kubernetes_version()?;
    let role = chart::helm_ok(
        lab,
        &[
            "template",
            "compose-view",
            &chart,
            "--kube-version",
            &kube_version,
            "--show-only",
            "templates/aggregate-roles.yaml",
        ],
    )?;
    let user = "ferrolb-compose-viewer";
    let _created = Created {
        lab: lab.clone(),
        objects: vec![
            "clusterrole/compose-view-ferrolb-view".to_owned(),
            format!("clusterrolebinding/{user}"),
        ],
    };
    kubectl(lab, &["apply", "-f", "-"], Some(&role))?;
    // A developer with the built-in view role in one namespace.
    let ns = harness::TestNamespace::create(lab, &client, "compose-view").await?;
    kubectl(
        lab,
        &[
            "create",
            "rolebinding",
            "viewer",
            "--clusterrole=view",
            &format!("--user={user}"),
            "-n",
            ns.name(),
        ],
        None,
    )?;
    let can = |verb: &str, resource: &str, namespace: Option<&str>| -> Result<bool> {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
        match namespace {
            Some(n) => args.extend(["-n", n]),
            None => args.push("--all-namespaces"),
        }
        let out = std::process::Command::new(lab.tools().path("kubectl"))
            .arg("--kubeconfig")
            .arg(lab.kubeconfig())
            .args(&args)
            .output()
            .context("cannot run kubectl auth can-i")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    let here = Some(ns.name());
    // The aggregation controller folds the chart's ClusterRole into view.
    wait_for(
        "view to include FerroLB's kinds",
        Duration::from_secs(30),
        || async { Ok(can("list", "servicel2statuses.ferrolb.io", here)?.then_some(())) },
    )
    .await?;
    let mut wrong = Vec::new();
    for (verb, resource, expected) in [
        ("get", "servicel2statuses.ferrolb.io", true),
        ("watch", "servicel2statuses.ferrolb.io", true),
        ("create", "servicel2statuses.ferrolb.io", false),
        ("patch", "servicel2statuses.ferrolb.io", false),
        ("delete", "servicel2statuses.ferrolb.io", false),
        ("patch", "servicel2statuses.ferrolb.io/status", false),
    ] {
        if can(verb, resource, here)? != expected {
            wrong.push(format!(
                "{verb} {resource} in the namespace: expected {expected}"
            ));
        }
    }
    // Cluster-scoped kinds need cluster-wide view: not granted by the RoleBinding.
    if can("list", "ipaddresspools.ferrolb.io", None)? {
        wrong.push("list ipaddresspools.ferrolb.io with view in one namespace".to_owned());
    }
    // Cluster-wide view: pools, advertisements and speakers too, still read-only.
    kubectl(
        lab,
        &[
            "create",
            "clusterrolebinding",
            user,
            "--clusterrole=view",
            &format!("--user={user}"),
        ],
        None,
    )?;
    wait_for(
        "cluster-wide view to take effect",
        Duration::from_secs(30),
        || async { Ok(can("list", "ipaddresspools.ferrolb.io", None)?.then_some(())) },
    )
    .await?;
    for (verb, resource, expected) in [
        ("list", "l2advertisements.ferrolb.io", true),
        ("watch", "speakerstatuses.ferrolb.io", true),
        ("create", "ipaddresspools.ferrolb.io", false),
        ("patch", "l2advertisements.ferrolb.io", false),
        ("delete", "ipaddresspools.ferrolb.io", false),
        ("patch", "speakerstatuses.ferrolb.io/status", false),
    ] {
        if can(verb, resource, None)? != expected {
            wrong.push(format!(
                "{verb} {resource} cluster-wide: expected {expected}"
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "the view role is wrong:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

//! End-to-end checks of the Helm chart (`charts/ferrolb`) in the lab: lint,
//! rendered manifests accepted by the API server, the values schema, and a
//! release's whole life (install, a LoadBalancer Service served by the chart's
//! own pods, upgrade, uninstall).
//!
//! The release handles only Services of its own load-balancer class and uses
//! ports, a pool and addresses of its own, so it runs beside the other tests'
//! controllers and speakers. The tests that touch the cluster take one lock;
//! a release left by an interrupted run is removed first.
//!
//! They skip without root or built tools unless `FERROLB_E2E` is set (as
//! `cargo lab test` does).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_e2e::agent::pod::pod_dir;
use ferrolb_e2e::chart;
use ferrolb_e2e::harness::kubectl;
use ferrolb_e2e::harness::{self, TestNamespace, wait_for};
use ferrolb_e2e::lab::Lab;
use ferrolb_e2e::lan::{self, Host};
use ferrolb_e2e::{objects, tools};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

const RELEASE: &str = "ferrolb-chart-test";
const RELEASE_NAMESPACE: &str = "ferrolb-chart-test";
const CLASS: &str = "ferrolb.io/chart-test";
const POOL: &str = "chart-test";
const POOL_RANGE: (&str, &str) = ("198.18.0.240", "198.18.0.247");
/// Ports no other test or the demo uses: the speakers share the nodes' network.
const PORTS: [&str; 3] = [
    "controller.metricsPort=27472",
    "speaker.metricsPort=27473",
    "speaker.gossipPort=27946",
];

/// The tests that touch the cluster share the release name and take turns.
static CLUSTER: Mutex<()> = Mutex::const_new(());

fn chart_path() -> String {
    chart::dir().to_string_lossy().into_owned()
}

/// The rendered documents of `helm template`, split at `---`.
fn documents(rendered: &str) -> Vec<String> {
    rendered
        .split("\n---")
        .map(str::trim)
        .filter(|d| d.lines().any(|l| l.starts_with("kind: ")))
        .map(str::to_owned)
        .collect()
}

fn kind(document: &str) -> &str {
    document
        .lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or_default()
        .trim()
}

#[tokio::test]
async fn lint_is_clean_also_strict() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let chart = chart_path();
    for strict in [false, true] {
        let mut args = vec!["lint", chart.as_str()];
        if strict {
            args.push("--strict");
        }
        let out = chart::helm(lab, &args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "helm {args:?} failed:\n{text}");
        ensure!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm {args:?} is not clean:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn schema_rejects_bad_values_naming_the_field() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("ferrolb-chart-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("cannot create a directory for values files")?;
    let cases: [(&str, &str, &str); 7] = [
        ("log-format", "logFormat: xml\n", "/logFormat"),
        (
            "replicas",
            "controller:\n  replicas: 0\n",
            "/controller/replicas",
        ),
        (
            "max-pps",
            "speaker:\n  announce:\n    maxPacketsPerSecond: 0\n",
            "/speaker/announce/maxPacketsPerSecond",
        ),
        (
            "pull-policy",
            "image:\n  pullPolicy: Sometimes\n",
            "/image/pullPolicy",
        ),
        ("unknown-key", "replicas: 2\n", "'replicas' not allowed"),
        (
            "refresh",
            "speaker:\n  announce:\n    refreshInterval: soon\n",
            "/speaker/announce/refreshInterval",
        ),
        (
            "suspect-timeout",
            "speaker:\n  gossip:\n    suspectTimeout: 0s\n",
            "/speaker/gossip/suspectTimeout",
        ),
    ];
    let chart = chart_path();
    let mut failures = Vec::new();
    for (name, values, field) in cases {
        let file: PathBuf = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, values)
            .with_context(|| format!("cannot write {}", file.display()))?;
        let file = file.to_string_lossy().into_owned();
        let out = chart::helm(lab, &["template", "x", &chart, "-f", &file])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{name}: helm accepted {values:?}"));
        } else if !stderr.contains(field) {
            failures.push(format!("{name}: the error does not name {field}: {stderr}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// GitOps tools (Argo CD, Flux) render with `helm template` and apply the
/// result: the same values must give the same bytes every time, or the release
/// is never in sync. The gossip key, once random per render, is now the
/// controller's to create: no Secret is rendered at all.
#[tokio::test]
async fn template_renders_the_same_bytes_every_time_and_no_key() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let kube_version = tools::kubernetes_version()?;
    let chart = chart_path();
    let render = || {
        chart::helm_ok(
            lab,
            &[
                "template",
                "ferrolb",
                chart.as_str(),
                "--namespace",
                "ferrolb-system",
                "--kube-version",
                kube_version.as_str(),
                "--set",
                "monitoring.serviceMonitor.enabled=true",
                "--set",
                "monitoring.prometheusRule.enabled=true",
            ],
        )
    };
    let (first, second) = (render()?, render()?);
    ensure!(
        first == second,
        "two renders differ:\n{}",
        first
            .lines()
            .zip(second.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let secrets: Vec<_> = documents(&first)
        .into_iter()
        .filter(|d| kind(d) == "Secret")
        .collect();
    ensure!(
        secrets.is_empty(),
        "the chart renders Secrets:\n{secrets:?}"
    );
    ensure!(
        first.contains("--gossip-secret=ferrolb-gossip")
            && first.contains("--gossip-secret-owner=ferrolb-controller"),
        "the controller is not told to keep the gossip key"
    );
    Ok(())
}

#[tokio::test]
async fn templates_are_accepted_by_the_api_server() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _turn = CLUSTER.lock().await;
    let client = lab.client().await?;
    // Namespaced objects need an existing namespace for a server-side dry run.
    let ns = TestNamespace::create(lab, &client, "chart-dry").await?;
    let kube_version = tools::kubernetes_version()?;
    let monitoring_crds = kubectl(lab, &["get", "crd", "-o", "name"], None)?
        .contains("servicemonitors.monitoring.coreos.com");
    let variants: [(&str, Vec<&str>); 2] = [
        ("default values", vec![]),
        (
            "non-default values",
            vec![
                "speaker.strictARP.enforce=true",
                "monitoring.serviceMonitor.enabled=true",
                "monitoring.prometheusRule.enabled=true",
                "loadBalancerClass=ferrolb.io/dry-run",
                "controller.replicas=1",
                "speaker.gossipSecretName=custom-gossip",
                "logFormat=json",
                "speaker.ignoreExcludeLabel=true",
                "speaker.gossip.probePeriod=200ms",
                "speaker.gossip.suspectTimeout=1s",
            ],
        ),
    ];
    let chart = chart_path();
    for (what, sets) in variants {
        let mut args = vec![
            "template",
            "ferrolb-chart-dry",
            chart.as_str(),
            "--namespace",
            ns.name(),
            "--kube-version",
            kube_version.as_str(),
            // The helm test pod names a ServiceAccount of the release, which a dry
            // run never creates; chart_compose.rs runs it for real.
            "--skip-tests",
        ];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let rendered = chart::helm_ok(lab, &args)?;
        let docs = documents(&rendered);
        let monitoring = ["ServiceMonitor", "PrometheusRule"];
        if !sets.is_empty() {
            // What the values switch on is really rendered.
            for k in monitoring {
                ensure!(docs.iter().any(|d| kind(d) == k), "{what}: no {k} rendered");
            }
            ensure!(
                rendered.contains("- NET_ADMIN") && rendered.contains("--enforce-strict-arp"),
                "{what}: strictARP enforcement adds neither NET_ADMIN nor the flag"
            );
            ensure!(
                rendered.contains("--load-balancer-class=ferrolb.io/dry-run")
                    && rendered.contains("--gossip-secret=custom-gossip")
                    && rendered.contains("resourceNames: [custom-gossip]"),
                "{what}: the class or the custom gossip Secret is not passed on"
            );
            ensure!(
                !docs
                    .iter()
                    .any(|d| kind(d) == "Secret" || kind(d) == "PodDisruptionBudget"),
                "{what}: a custom gossip Secret or one replica still renders a Secret or a PDB"
            );
        }
        let applied: Vec<&str> = docs
            .iter()
            .filter(|d| monitoring_crds || !monitoring.contains(&kind(d)))
            .map(String::as_str)
            .collect();
        let manifest = applied.join("\n---\n");
        let out = kubectl(
            lab,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=ferrolb-chart-dry-run",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
            ],
            Some(&manifest),
        )
        .with_context(|| format!("the API server refused the chart rendered with {what}"))?;
        ensure!(
            out.lines().count() == applied.len(),
            "{what}: {} documents rendered, the API server accepted:\n{out}",
            applied.len()
        );
    }
    Ok(())
}

/// The PrometheusRule and the dashboard follow their values: alerts switched off
/// are gone, severities and `for` are the values', excluded pools are left out of
/// every pool alert, each alert links its runbook section, and the dashboard
/// ConfigMap carries the sidecar's label and the dashboard file unchanged.
#[tokio::test]
async fn alerts_and_dashboard_follow_their_values() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let chart = chart_path();
    let kube_version = tools::kubernetes_version()?;
    let rendered = chart::helm_ok(
        lab,
        &[
            "template",
            "ferrolb-alerts",
            chart.as_str(),
            "--kube-version",
            kube_version.as_str(),
            "--namespace",
            "lb",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.prometheusRule.excludePools={full.pool,spare}",
            "--set",
            "monitoring.prometheusRule.alerts.FerroLBGossipRejected.enabled=false",
            "--set",
            "monitoring.prometheusRule.alerts.FerroLBPoolExhausted.severity=page",
            "--set",
            "monitoring.prometheusRule.alerts.FerroLBPoolExhausted.for=2m",
            "--set",
            "monitoring.dashboard.enabled=true",
            "--set",
            "monitoring.dashboard.namespace=grafana",
            "--set",
            "monitoring.dashboard.folder=Network",
        ],
    )?;
    let docs = documents(&rendered);
    let rule = docs
        .iter()
        .find(|d| kind(d) == "PrometheusRule")
        .context("no PrometheusRule rendered")?;
    let rule: serde_yaml::Value = serde_yaml::from_str(rule)?;
    let rules = rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .context("no rules")?;
    let alert = |name: &str| rules.iter().find(|r| r["alert"].as_str() == Some(name));
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for name in [
        "FerroLBPoolUsage75Percent",
        "FerroLBPoolUsage85Percent",
        "FerroLBPoolUsage95Percent",
        "FerroLBPoolExhausted",
        "FerroLBNoLeader",
        "FerroLBStrictARPFalse",
        "FerroLBSpeakerMembershipSplit",
        "FerroLBAnnouncementFailures",
    ] {
        ensure!(names.contains(&name), "{name} missing from {names:?}");
    }
    ensure!(
        alert("FerroLBGossipRejected").is_none(),
        "a switched-off alert is rendered"
    );
    let exhausted = alert("FerroLBPoolExhausted").context("no FerroLBPoolExhausted")?;
    ensure!(
        exhausted["labels"]["severity"].as_str() == Some("page")
            && exhausted["for"].as_str() == Some("2m"),
        "FerroLBPoolExhausted ignores its severity or for: {exhausted:?}"
    );
    for rule in rules {
        let name = rule["alert"].as_str().unwrap_or_default();
        let expr = rule["expr"].as_str().unwrap_or_default();
        if name.starts_with("FerroLBPool") {
            ensure!(
                expr.matches("ferrolb_pool_").count()
                    == expr.matches("{pool!~`full\\.pool|spare`}").count()
                    && expr.contains("ferrolb_leader == 1"),
                "{name} does not exclude the pools or join on the leader:\n{expr}"
            );
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            runbook.contains("/docs/operations.md#")
                && rule["annotations"]["summary"].as_str().is_some()
                && rule["annotations"]["description"].as_str().is_some(),
            "{name} lacks a summary, a description or a runbook section: {rule:?}"
        );
        let anchor = runbook.rsplit('#').next().unwrap_or_default();
        let docs = std::fs::read_to_string(harness::repo_root().join("docs/operations.md"))?;
        ensure!(
            docs.lines().any(|l| l
                .strip_prefix("### ")
                .is_some_and(|h| { h.to_lowercase().replace(' ', "-") == anchor })),
            "{name} links #{anchor}, which is no section of docs/operations.md"
        );
    }

    let dashboard = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && d.contains("ferrolb.json"))
        .context("no dashboard ConfigMap rendered")?;
    let dashboard: serde_yaml::Value = serde_yaml::from_str(dashboard)?;
    ensure!(
        dashboard["metadata"]["namespace"].as_str() == Some("grafana")
            && dashboard["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
            && dashboard["metadata"]["annotations"]["grafana_folder"].as_str() == Some("Network"),
        "the dashboard ConfigMap is not where or how the sidecar finds it: {dashboard:?}"
    );
    let shipped: serde_json::Value = serde_json::from_str(
        dashboard["data"]["ferrolb.json"]
            .as_str()
            .context("no ferrolb.json in the ConfigMap")?,
    )?;
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        chart::dir().join("dashboards/ferrolb.json"),
    )?)?;
    ensure!(
        shipped == file,
        "the ConfigMap's dashboard differs from the file"
    );

    // Off by default; an unknown alert name is refused, naming the field.
    let defaults = chart::helm_ok(
        lab,
        &[
            "template",
            "x",
            chart.as_str(),
            "--kube-version",
            kube_version.as_str(),
        ],
    )?;
    ensure!(
        !documents(&defaults)
            .iter()
            .any(|d| kind(d) == "PrometheusRule" || d.contains("ferrolb.json")),
        "alerts or the dashboard render by default"
    );
    let out = chart::helm(
        lab,
        &[
            "template",
            "x",
            chart.as_str(),
            "--kube-version",
            kube_version.as_str(),
            "--set",
            "monitoring.prometheusRule.alerts.FerroLBTypo.enabled=true",
        ],
    )?;
    ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/monitoring/prometheusRule/alerts"),
        "an unknown alert name was not refused by name: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What one rendered release claims that another release beside it must not:
/// the names of its cluster-scoped objects, the ports its hostNetwork pods
/// bind on every node, and the flags naming it.
#[derive(Debug, Default)]
struct Claims {
    cluster_scoped: Vec<String>,
    host_ports: Vec<(i64, String)>,
    controller_args: Vec<String>,
    speaker_args: Vec<String>,
}

fn claims(rendered: &str) -> Result<Claims> {
    use serde::Deserialize as _;
    let mut claims = Claims::default();
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let object = serde_json::to_value(serde_yaml::Value::deserialize(document)?)?;
        let Some(kind) = object["kind"].as_str() else {
            continue;
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if kind.starts_with("Cluster") || kind == "CustomResourceDefinition" {
            claims.cluster_scoped.push(format!("{kind}/{name}"));
        }
        let pod = &object["spec"]["template"]["spec"];
        for container in pod["containers"].as_array().into_iter().flatten() {
            let args: Vec<String> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            match container["name"].as_str() {
                Some("controller") => claims.controller_args = args,
                Some("speaker") => claims.speaker_args = args,
                _ => {}
            }
            if pod["hostNetwork"].as_bool() == Some(true) {
                for port in container["ports"].as_array().into_iter().flatten() {
                    let number = port["containerPort"].as_i64().unwrap_or_default();
                    let protocol = port["protocol"].as_str().unwrap_or("TCP").to_owned();
                    claims.host_ports.push((number, protocol));
                }
            }
        }
    }
    Ok(claims)
}

/// The value of `--flag=` among `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

#[tokio::test]
async fn a_second_release_renders_beside_the_first_without_shared_names_or_host_ports() -> Result<()>
{
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let chart = chart_path();
    let kube_version = tools::kubernetes_version()?;
    let render = |release: &str, sets: &[&str]| -> Result<Claims> {
        let mut args = vec![
            "template",
            release,
            chart.as_str(),
            "--namespace",
            release,
            "--kube-version",
            kube_version.as_str(),
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        claims(&chart::helm_ok(lab, &args)?)
    };
    // The first installation as most clusters run it: release "ferrolb",
    // default values. Without a class the Lease keeps the controller's default name
    // whatever the release is called, so an upgrade never runs two leaders under
    // two Lease names.
    let first = render("ferrolb", &[])?;
    for args in [&first.controller_args, &first.speaker_args] {
        ensure!(
            flag(args, "--instance").is_none(),
            "an installation without a class got an instance name: {args:?}"
        );
    }
    ensure!(
        flag(&first.controller_args, "--lease-name").is_none()
            && flag(&first.controller_args, "--field-manager") == Some("ferrolb-controller"),
        "release ferrolb renamed its Lease or field manager: {:?}",
        first.controller_args
    );
    let renamed = render("lb", &[])?;
    ensure!(
        flag(&renamed.controller_args, "--lease-name").is_none(),
        "a release without a class named its own Lease: {:?}",
        renamed.controller_args
    );
    // The second, as values.yaml tells: its own class, ports and no CRDs.
    let second_values = [
        "loadBalancerClass=ferrolb.io/internal",
        "crds.enabled=false",
        "speaker.metricsPort=7483",
        "speaker.gossipPort=7956",
    ];
    let second = render("internal", &second_values)?;
    for (component, args) in [
        ("controller", &second.controller_args),
        ("speaker", &second.speaker_args),
    ] {
        ensure!(
            flag(args, "--instance") == Some("internal")
                && flag(args, "--load-balancer-class") == Some("ferrolb.io/internal"),
            "the second release's {component} is not named by its release and class: {args:?}"
        );
    }
    ensure!(
        flag(&second.controller_args, "--lease-name") == Some("internal-ferrolb-controller")
            && flag(&second.controller_args, "--field-manager")
                == Some("internal-ferrolb-controller"),
        "the second release's controller: {:?}",
        second.controller_args
    );
    let shared: Vec<&String> = first
        .cluster_scoped
        .iter()
        .filter(|n| second.cluster_scoped.contains(n))
        .collect();
    ensure!(
        shared.is_empty(),
        "both releases render cluster-scoped {shared:?}"
    );
    let clash = |a: &Claims, b: &Claims| -> Vec<(i64, String)> {
        a.host_ports
            .iter()
            .filter(|p| b.host_ports.contains(p))
            .cloned()
            .collect()
    };
    ensure!(
        !first.host_ports.is_empty() && clash(&first, &second).is_empty(),
        "the releases bind the same host ports: {:?}",
        clash(&first, &second)
    );
    // What values.yaml warns of: the speakers share the nodes' network, so a
    // second release with the default ports would bind the first one's.
    let careless = render("internal", &second_values[..2])?;
    ensure!(
        clash(&first, &careless).len() == first.host_ports.len(),
        "a second release with default ports does not collide as expected: {:?}",
        careless.host_ports
    );
    Ok(())
}

/// Installs the release (2 controller replicas, a speaker per node), adopting
/// the CRDs already there: uninstalled when dropped.
async fn install_release(lab: &Lab) -> Result<chart::Release> {
    let class = format!("loadBalancerClass={CLASS}");
    let mut set = vec![class.as_str()];
    set.extend(PORTS);
    let release =
        chart::Release::prepare(lab, RELEASE, RELEASE_NAMESPACE, &chart::dir(), &set).await?;
    chart::adopt_crds(lab, RELEASE, RELEASE_NAMESPACE)?;
    release.install(&[])?;
    Ok(release)
}

/// Waits until the release runs 2 Ready controller pods and one Ready speaker
/// per node.
async fn wait_for_pods(release: &chart::Release, nodes: usize) -> Result<()> {
    release.wait_for_pods("controller", 2).await?;
    release.wait_for_pods("speaker", nodes).await?;
    Ok(())
}

/// Cluster-scoped objects of this test, deleted when dropped.
struct ClusterObjects {
    lab: Lab,
    names: Vec<&'static str>,
}

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for name in &self.names {
            // A pool still held keeps the controller's finalizer, and the release may be
            // gone already: nobody would remove it.
            if name.starts_with("ipaddresspool/") {
                let _ = kubectl(
                    &self.lab,
                    &[
                        "patch",
                        name,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                );
            }
            let _ = kubectl(&self.lab, &["delete", name, "--ignore-not-found"], None);
        }
    }
}

/// Checks that every pod of the release runs our binary (the node agent has a
/// live process for it) and that none was refused by the API server: the
/// chart's RBAC is enough for what the binaries do (RBAC's refusals name the
/// ServiceAccount in their logs).
async fn check_pods_and_rbac(lab: &Lab, client: &Client) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await?;
    let mut refused = Vec::new();
    for pod in &pods.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let container = pod
            .labels()
            .get("app.kubernetes.io/component")
            .cloned()
            .unwrap_or_default();
        ensure!(
            harness::container_pid(lab, RELEASE_NAMESPACE, &name, &container).is_some(),
            "pod {name} has no running {container} process"
        );
        let log = pod_dir(&lab.state, RELEASE_NAMESPACE, &name).join(format!("{container}.log"));
        let text = std::fs::read_to_string(&log)
            .with_context(|| format!("cannot read {}", log.display()))?;
        refused.extend(
            text.lines()
                // RBAC's refusal, not others (e.g. a terminating namespace).
                .filter(|l| l.contains("is forbidden: User \"system:serviceaccount:"))
                .map(|l| format!("{name}: {l}")),
        );
    }
    ensure!(
        refused.is_empty(),
        "the API server refused the chart's pods:\n{}",
        refused.join("\n")
    );
    Ok(())
}

/// The gossip key, once the controller has created its Secret: owned by the
/// controller's Deployment (deleted with it), not by the Helm release.
async fn gossip_key(client: &Client) -> Result<Vec<u8>> {
    let secrets = Api::<Secret>::namespaced(client.clone(), RELEASE_NAMESPACE);
    let name = format!("{RELEASE}-gossip");
    let secret = wait_for(
        "the controller to create the gossip key Secret",
        Duration::from_secs(30),
        || async { Ok(secrets.get_opt(&name).await?) },
    )
    .await?;
    let owners = secret.owner_references();
    ensure!(
        owners.len() == 1
            && owners[0].kind == "Deployment"
            && owners[0].name == format!("{RELEASE}-controller"),
        "the gossip Secret's owners: {owners:?}"
    );
    ensure!(
        !secret
            .annotations()
            .contains_key("meta.helm.sh/release-name"),
        "the gossip Secret belongs to the Helm release"
    );
    let key = secret
        .data
        .and_then(|d| d.get("key").cloned())
        .context("the gossip Secret has no key")?;
    ensure!(
        key.0.len() == 32,
        "the gossip key is {} bytes, not 32",
        key.0.len()
    );
    Ok(key.0)
}

fn announcer(lab: &Lab, namespace: &str) -> Result<Option<String>> {
    let node = kubectl(
        lab,
        &[
            "get",
            "servicel2status",
            "web",
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.node}",
            "--ignore-not-found",
        ],
        None,
    )?;
    Ok(Some(node.trim().to_owned()).filter(|n| !n.is_empty()))
}

/// Pings and fetches `ip` from the client until both answer: the answering
/// pod's name.
async fn reach(ip: IpAddr) -> Result<String> {
    let client_host = Host::client();
    wait_for(
        &format!("{ip} to answer ping and HTTP from the client"),
        Duration::from_secs(30),
        || {
            let client_host = client_host.clone();
            async move {
                if !harness::ping(&client_host, ip)? {
                    bail!("no ping answer");
                }
                harness::curl(&client_host, &format!("http://{ip}/"))
            }
        },
    )
    .await
}

/// The announcing node answers ARP for `ip`; with strictARP on (the lab's
/// default, which a test may switch off for a while) no other node does.
fn check_arp(lab: &Lab, node: &str, ip: Ipv4Addr) -> Result<()> {
    let nodes = lab.nodes();
    let owner = nodes
        .iter()
        .find(|h| h.name == node)
        .with_context(|| format!("no lab node {node}"))?;
    let mac = lan::mac_of(owner)?.to_lowercase();
    // Whether every node ignores ARP for addresses not on the asking interface.
    let strict = || -> Result<bool> {
        for host in &nodes {
            let out = harness::exec_in(host, "sysctl", &["-n", "net.ipv4.conf.all.arp_ignore"])?;
            if String::from_utf8_lossy(&out.stdout).trim() != "1" {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let before = strict()?;
    let macs = harness::arping(&Host::client(), ip, 2)?;
    let strict = before && strict()?;
    ensure!(
        macs.contains(&mac),
        "ARP for {ip} answered by {macs:?}, not by {node} ({mac})"
    );
    ensure!(
        !strict || macs.len() == 1,
        "ARP for {ip} answered by {macs:?} with strictARP on, not only {node} ({mac})"
    );
    Ok(())
}

async fn service_ips(client: &Client, namespace: &str) -> Result<Vec<IpAddr>> {
    objects::wait_for_load_balancer_ips(client, namespace, "web", Duration::from_secs(60)).await
}

/// Names of what the release made that are still there (the CRDs aside).
fn leftovers(lab: &Lab) -> Result<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let mut found = kubectl(
        lab,
        &[
            "get",
            "deployments,daemonsets,serviceaccounts,secrets,services,roles,rolebindings,poddisruptionbudgets",
            "-A",
            "-l",
            &selector,
            "-o",
            "name",
        ],
        None,
    )?;
    found.push_str(&kubectl(
        lab,
        &[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            &selector,
            "-o",
            "name",
        ],
        None,
    )?);
    // The names too, in case a label went missing.
    for (kind, namespace, name) in [
        ("secret", RELEASE_NAMESPACE, format!("{RELEASE}-gossip")),
        (
            "serviceaccount",
            RELEASE_NAMESPACE,
            format!("{RELEASE}-speaker"),
        ),
        (
            "rolebinding",
            "kube-system",
            format!("{RELEASE}-speaker-kube-proxy"),
        ),
        ("clusterrole", "", format!("{RELEASE}-controller")),
    ] {
        let mut args = vec![
            "get",
            kind,
            name.as_str(),
            "-o",
            "name",
            "--ignore-not-found",
        ];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        found.push_str(&kubectl(lab, &args, None)?);
    }
    Ok(found.trim().to_owned())
}

/// Checks that `kubectl get <args>` names no object after the uninstall.
fn none_left(lab: &Lab, what: &str, args: &[&str]) -> Result<()> {
    let mut get = vec!["get"];
    get.extend(args);
    get.extend(["-o", "name"]);
    let left = kubectl(lab, &get, None)?;
    ensure!(left.trim().is_empty(), "helm uninstall left {what}: {left}");
    Ok(())
}

#[tokio::test]
async fn install_serves_a_service_then_upgrade_keeps_key_and_ips_and_uninstall_keeps_crds()
-> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _turn = CLUSTER.lock().await;
    let client = lab.client().await?;
    let nodes = lab.nodes().len();
    let started = Instant::now();

    // Install: the chart's controller (2 replicas) and speakers run as pods,
    // with the chart's ServiceAccounts and RBAC.
    let release = install_release(lab).await?;
    wait_for_pods(&release, nodes).await?;
    eprintln!("installed, pods Ready after {:.1?}", started.elapsed());

    // A pool of the release's class only this test's Service asks for (not
    // auto-assigned either), announced on every node.
    let pool_spec = format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {POOL}\n\
         spec:\n  addresses: [\"{}-{}\"]\n  autoAssign: false\n  loadBalancerClass: {CLASS}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {POOL}\n\
         spec:\n  ipAddressPools: [{POOL}]\n",
        POOL_RANGE.0, POOL_RANGE.1
    );
    let _objects = ClusterObjects {
        lab: lab.clone(),
        names: vec!["l2advertisement/chart-test", "ipaddresspool/chart-test"],
    };
    kubectl(lab, &["apply", "-f", "-"], Some(&pool_spec))?;

    let ns = TestNamespace::create(lab, &client, "chart").await?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{
                    "name": "web", "image": "nginx",
                    "ports": [{ "containerPort": 8080 }],
                }] },
            },
        },
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &deployment)
        .await?;
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web", "annotations": { "ferrolb.io/address-pool": POOL } },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": CLASS,
            "selector": { "app": "web" },
            "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
        },
    }))?;
    Api::<Service>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &service)
        .await?;

    let ips = service_ips(&client, ns.name()).await?;
    let (low, high): (IpAddr, IpAddr) = (POOL_RANGE.0.parse()?, POOL_RANGE.1.parse()?);
    ensure!(
        ips.iter().all(|ip| (low..=high).contains(ip)),
        "the Service got {ips:?}, not from {}-{}",
        POOL_RANGE.0,
        POOL_RANGE.1
    );
    let ip = ips[0];
    let node = wait_for(
        "a ServiceL2Status naming the announcing node",
        Duration::from_secs(30),
        || async { announcer(lab, ns.name()) },
    )
    .await?;
    ensure!(
        lab.nodes().iter().any(|h| h.name == node),
        "ServiceL2Status names {node}, not a lab node"
    );
    let pod = reach(ip).await?;
    ensure!(
        pod.starts_with("web-"),
        "http://{ip}/ answered {pod:?}, not a web pod"
    );
    if let IpAddr::V4(v4) = ip {
        check_arp(lab, &node, v4)?;
    }
    // The lab runs kube-proxy's IPVS emulation with strictARP on: the
    // controller gathers every speaker's verdict on the advertisement.
    let strict_arp = wait_for(
        "the L2Advertisement's StrictARP condition to be True",
        Duration::from_secs(30),
        || async {
            let out = kubectl(
                lab,
                &[
                    "get",
                    "l2advertisement",
                    POOL,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"StrictARP\")]}",
                ],
                None,
            )?;
            let condition: Option<serde_json::Value> = serde_json::from_str(&out).ok();
            Ok(condition.filter(|c| c["status"] == "True"))
        },
    )
    .await?;
    ensure!(
        strict_arp["reason"] == "AllNodesSafe"
            && strict_arp["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("the {nodes} reporting"))),
        "StrictARP condition: {strict_arp}"
    );
    check_pods_and_rbac(lab, &client).await?;
    eprintln!(
        "{ip} announced by {node}, answered by {pod}, after {:.1?}",
        started.elapsed()
    );

    // Upgrade with a harmless change: every pod restarts, the gossip key and
    // the Service's IPs stay.
    let key = gossip_key(&client).await?;
    release.upgrade(&["logLevel=debug"])?;
    wait_for_pods(&release, nodes).await?;
    let env = kubectl(
        lab,
        &[
            "get",
            "daemonset",
            &format!("{RELEASE}-speaker"),
            "-n",
            RELEASE_NAMESPACE,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}",
        ],
        None,
    )?;
    ensure!(
        env == "debug",
        "the upgrade did not reach the speakers: FERROLB_LOG={env:?}"
    );
    ensure!(
        gossip_key(&client).await? == key,
        "helm upgrade changed the gossip key"
    );
    // Give the new pods time to re-read everything, then check nothing moved.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = service_ips(&client, ns.name()).await?;
    ensure!(
        after == ips,
        "helm upgrade changed the Service's IPs: {ips:?} -> {after:?}"
    );
    reach(ip).await?;
    check_pods_and_rbac(lab, &client).await?;
    eprintln!(
        "upgraded, key and {ips:?} kept, after {:.1?}",
        started.elapsed()
    );

    // Rotation by deletion: the leader creates a new key at once; the
    // speakers keep serving (they switch over in two phases).
    kubectl(
        lab,
        &[
            "delete",
            "secret",
            &format!("{RELEASE}-gossip"),
            "-n",
            RELEASE_NAMESPACE,
        ],
        None,
    )?;
    let rotated = wait_for("a new gossip key", Duration::from_secs(30), || async {
        Ok(gossip_key(&client).await.ok().filter(|new| *new != key))
    })
    .await?;
    ensure!(
        rotated.len() == 32,
        "the new key is {} bytes",
        rotated.len()
    );
    reach(ip).await?;
    eprintln!(
        "gossip Secret deleted and created anew, {ip} still served, after {:.1?}",
        started.elapsed()
    );

    // Uninstall: everything the release made goes, the CRDs stay.
    release.uninstall()?;
    // The controller-made gossip Secret goes with the Deployment (garbage
    // collection, shortly after).
    wait_for(
        "helm uninstall to leave nothing of the release",
        Duration::from_secs(30),
        || async { Ok(leftovers(lab)?.is_empty().then_some(())) },
    )
    .await
    .with_context(|| {
        format!(
            "helm uninstall left:\n{}",
            leftovers(lab).unwrap_or_default()
        )
    })?;
    // Nothing the installation wrote goes on naming nodes or holding pools:
    // the speakers and the post-delete hook removed it.
    none_left(
        lab,
        "ServiceL2Status objects",
        &["servicel2statuses", "-n", ns.name()],
    )?;
    none_left(
        lab,
        "SpeakerStatus objects",
        &[
            "speakerstatuses",
            "-l",
            &format!("ferrolb.io/instance={RELEASE}"),
        ],
    )?;
    let finalizers = kubectl(
        lab,
        &[
            "get",
            "ipaddresspool",
            POOL,
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
        None,
    )?;
    ensure!(
        !finalizers.contains("ferrolb.io/pool-in-use"),
        "the pool keeps the uninstalled controller's finalizer: {finalizers}"
    );
    none_left(
        lab,
        "the controller's Lease",
        &[
            "lease",
            &format!("{RELEASE}-controller"),
            "-n",
            RELEASE_NAMESPACE,
            "--ignore-not-found",
        ],
    )?;
    for crd in chart::CRDS {
        kubectl(lab, &["get", "crd", crd, "-o", "name"], None)
            .with_context(|| format!("helm uninstall removed CRD {crd}"))?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    wait_for(
        "the release's pods to be gone",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(
                        &ListParams::default()
                            .labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                    )
                    .await?;
                Ok(list.items.is_empty().then_some(()))
            }
        },
    )
    .await?;
    eprintln!("uninstalled, CRDs kept, after {:.1?}", started.elapsed());
    drop(release);
    Ok(())
}

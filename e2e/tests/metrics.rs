//! The metrics endpoint as the chart installs it, seen from outside: the
//! speakers (in the nodes' network) serve HTTPS on the node's address only,
//! `/metrics` answers 401 without a valid token, 403 to a ServiceAccount not
//! bound to the chart's `<release>-metrics-reader` ClusterRole and the
//! metrics to one that is; the probes pass over HTTPS without a token (the
//! release's pods turn Ready); and a process whose port is taken exits
//! non-zero saying so.
//!
//! The release uses its own class, namespace and ports (27572, 27573, 27986)
//! and no pool, so it runs beside the other tests. It skips without root or
//! built tools unless `FERROLB_E2E` is set (as `cargo lab test` does).

use std::process::Output;

use anyhow::{Context, Result, ensure};
use ferrolb_e2e::chart;
use ferrolb_e2e::harness::{self, TestNamespace, exec_in, kubectl};
use ferrolb_e2e::lab::Lab;
use ferrolb_e2e::lan::Host;
use ferrolb_e2e::speakers::speaker_binary;

const RELEASE: &str = "ferrolb-metrics-test";
const CLASS: &str = "ferrolb.io/metrics-test";
const CONTROLLER_PORT: u16 = 27572;
const SPEAKER_PORT: u16 = 27573;
const GOSSIP_PORT: u16 = 27986;

/// Installs the release in its own namespace: uninstalled, with its
/// namespace, when dropped.
async fn install_release(lab: &Lab) -> Result<chart::Release> {
    let sets = [
        format!("loadBalancerClass={CLASS}"),
        // The CRDs are the lab's, applied from this build.
        "crds.enabled=false".into(),
        "controller.replicas=1".into(),
        format!("controller.metricsPort={CONTROLLER_PORT}"),
        format!("speaker.metricsPort={SPEAKER_PORT}"),
        format!("speaker.gossipPort={GOSSIP_PORT}"),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let release = chart::Release::prepare(lab, RELEASE, RELEASE, &chart::dir(), &sets).await?;
    // Ready pods (helm waits for them): the HTTPS probes of /readyz pass
    // without a token.
    release.install(&[])?;
    Ok(release)
}

/// A ClusterRoleBinding of this test, deleted when dropped.
struct Binding {
    lab: Lab,
    name: String,
}

impl Drop for Binding {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.lab,
            &[
                "delete",
                "clusterrolebinding",
                &self.name,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// A GET of `url` from `from` with curl (no certificate verification, as a
/// ServiceMonitor with insecureSkipVerify), with `token` as bearer: the HTTP
/// status, or `None` when no HTTP answer came (refused, TLS failed), and the body.
fn get(from: &Host, url: &str, token: Option<&str>) -> Result<(Option<u16>, String)> {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-s", "-k", "-g", "-m", "5", "-w", "\n%{http_code}"];
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    args.push(url);
    let out = exec_in(from, "curl", &args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code = code.trim().parse::<u16>().ok().filter(|c| *c != 0);
    Ok((code, body.to_owned()))
}

fn token(lab: &Lab, namespace: &str, account: &str) -> Result<String> {
    Ok(kubectl(
        lab,
        &[
            "create",
            "token",
            account,
            "--namespace",
            namespace,
            "--duration",
            "10m",
        ],
        None,
    )?
    .trim()
    .to_owned())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn metrics_are_served_on_the_node_address_to_authorised_scrapers_only() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    let release = install_release(lab).await?;
    let nodes = lab.nodes();
    let node = nodes.first().context("the lab has no node")?;
    let outside = Host::client();
    let speaker_url = |path: &str| format!("https://{}:{SPEAKER_PORT}{path}", node.ipv4);

    // Without a token, or with one the API server does not know: 401, no metrics.
    let (code, body) = get(&outside, &speaker_url("/metrics"), None)?;
    ensure!(
        code == Some(401) && !body.contains("ferrolb_"),
        "an unauthenticated scrape of {} got {code:?}: {body}",
        speaker_url("/metrics")
    );
    let (code, _) = get(&outside, &speaker_url("/metrics"), Some("made-up"))?;
    ensure!(code == Some(401), "a made-up token got {code:?}");
    // Plain HTTP gets no answer: tokens never travel in clear text.
    let plain = format!("http://{}:{SPEAKER_PORT}/metrics", node.ipv4);
    let (code, _) = get(&outside, &plain, None)?;
    ensure!(
        code.is_none() || code == Some(400),
        "plain HTTP got {code:?}"
    );
    // The probes' paths need no token.
    let (code, body) = get(&outside, &speaker_url("/readyz"), None)?;
    ensure!(code == Some(200), "/readyz got {code:?}: {body}");

    // Two ServiceAccounts; only one bound to the chart's metrics-reader role.
    let ns = TestNamespace::create(lab, &client, "metrics").await?;
    for account in ["scraper", "stranger"] {
        kubectl(
            lab,
            &["create", "serviceaccount", account, "-n", ns.name()],
            None,
        )?;
    }
    let reader = format!("{RELEASE}-metrics-reader");
    kubectl(lab, &["get", "clusterrole", &reader], None)
        .with_context(|| format!("the chart has no ClusterRole {reader}"))?;
    let binding = Binding {
        lab: lab.clone(),
        name: format!("{}-scraper", ns.name()),
    };
    kubectl(
        lab,
        &[
            "create",
            "clusterrolebinding",
            &binding.name,
            "--clusterrole",
            &reader,
            "--serviceaccount",
            &format!("{}:scraper", ns.name()),
        ],
        None,
    )?;
    let scraper = token(lab, ns.name(), "scraper")?;
    let stranger = token(lab, ns.name(), "stranger")?;

    let (code, body) = get(&outside, &speaker_url("/metrics"), Some(&stranger))?;
    ensure!(
        code == Some(403)
            && body.contains(&format!("system:serviceaccount:{}:stranger", ns.name())),
        "an unbound ServiceAccount got {code:?}: {body}"
    );
    ensure!(
        !body.contains("ferrolb_"),
        "a refusal shows metrics: {body}"
    );
    let (code, body) = get(&outside, &speaker_url("/metrics"), Some(&scraper))?;
    ensure!(
        code == Some(200) && body.contains("ferrolb_speaker_"),
        "the metrics-reader ServiceAccount got {code:?}: {body}"
    );

    // The controller, on its pod's IP, the same way (from its node, which
    // routes to the pod network).
    let pod_ip = kubectl(
        lab,
        &[
            "get",
            "pods",
            "-n",
            RELEASE,
            "-l",
            "app.kubernetes.io/component=controller",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ],
        None,
    )?;
    let controller_url = format!("https://{}:{CONTROLLER_PORT}/metrics", pod_ip.trim());
    let (code, _) = get(node, &controller_url, None)?;
    ensure!(
        code == Some(401),
        "the controller's /metrics without a token got {code:?}"
    );
    let (code, body) = get(node, &controller_url, Some(&scraper))?;
    ensure!(
        code == Some(200) && body.contains("ferrolb_"),
        "the controller's /metrics with the reader's token got {code:?}: {body}"
    );

    // Only the node's address is served: loopback in the node's own network is not.
    let (code, _) = get(
        node,
        &format!("https://127.0.0.1:{SPEAKER_PORT}/healthz"),
        None,
    )?;
    ensure!(code.is_none(), "127.0.0.1 on the node answered {code:?}");

    // A speaker whose port is taken (by the release's) exits non-zero, saying so.
    let bin = speaker_binary()?;
    let kubeconfig = format!("KUBECONFIG={}", lab.kubeconfig().display());
    // `timeout` ends a speaker that (wrongly) keeps running.
    let out = exec_in(
        node,
        "timeout",
        &[
            "20",
            "env",
            &kubeconfig,
            &bin.to_string_lossy(),
            "--node-name",
            &node.name,
            "--pod-ip",
            &node.ipv4.to_string(),
            "--metrics-port",
            &SPEAKER_PORT.to_string(),
            "--gossip-port",
            &GOSSIP_PORT.to_string(),
            "--load-balancer-class",
            CLASS,
        ],
    )?;
    let said = stderr(&out);
    ensure!(
        !out.status.success()
            && said.contains(&format!("cannot listen on {}:{SPEAKER_PORT}", node.ipv4)),
        "a speaker on a taken port exited with {:?}: {said}",
        out.status
    );
    drop(binding);
    drop(release);
    Ok(())
}

//! Two FerroLB installations side by side in the lab: two Helm releases of the
//! chart, each with its own `loadBalancerClass`, pool, ports and gossip key,
//! on the same nodes. Each serves only its own Service from its own pool,
//! announced by its own speakers, and neither writes the other's objects:
//! what a user checks with `kubectl get svc,servicel2status,speakerstatus`,
//! `ping` and `arping`, plus the objects' `managedFields` and a quiet window
//! in which nothing is rewritten.
//!
//! The releases use addresses (198.18.0.192-199) and ports (27482-27493,
//! 27956, 27966) no other test or the demo uses. It skips without root or
//! built tools unless `FERROLB_E2E` is set (as `cargo lab test` does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_e2e::harness::{self, StrictArp, TestNamespace, kubectl, wait_for};
use ferrolb_e2e::lab::Lab;
use ferrolb_e2e::lan::{self, Host};
use ferrolb_e2e::{chart, objects};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// One installation: a release of the chart in its own namespace.
struct Installation {
    /// The release name, which is also its namespace and, with a class set,
    /// its instance name.
    release: &'static str,
    class: &'static str,
    /// The pool and the L2Advertisement of the class.
    pool: &'static str,
    range: (&'static str, &'static str),
    /// `helm --set` values of its own: ports, since the speakers share the
    /// nodes' network.
    ports: [&'static str; 3],
}

const A: Installation = Installation {
    release: "ferrolb-a",
    class: "ferrolb.io/a",
    pool: "installation-a",
    range: ("198.18.0.192", "198.18.0.195"),
    ports: [
        "controller.metricsPort=27482",
        "speaker.metricsPort=27483",
        "speaker.gossipPort=27956",
    ],
};

const B: Installation = Installation {
    release: "ferrolb-b",
    class: "ferrolb.io/b",
    pool: "installation-b",
    range: ("198.18.0.196", "198.18.0.199"),
    ports: [
        "controller.metricsPort=27492",
        "speaker.metricsPort=27493",
        "speaker.gossipPort=27966",
    ],
};

/// How long nothing may be rewritten once everything is in place.
const QUIET: Duration = Duration::from_secs(10);

impl Installation {
    /// The field manager of the installation's controller (the chart passes
    /// the controller's name).
    fn controller_manager(&self) -> String {
        format!("{}-controller", self.release)
    }

    /// The field manager of the installation's speakers.
    fn speaker_manager(&self) -> String {
        format!("ferrolb-speaker-{}", self.release)
    }

    /// The Service of the class in the test's namespace.
    fn service(&self) -> String {
        format!("web-{}", self.release)
    }

    fn contains(&self, ip: IpAddr) -> Result<bool> {
        let (low, high): (IpAddr, IpAddr) = (self.range.0.parse()?, self.range.1.parse()?);
        Ok((low..=high).contains(&ip))
    }

    /// The installation's release, with what an earlier run left removed; not
    /// installed yet.
    async fn release(&self, lab: &Lab) -> Result<chart::Release> {
        let class = format!("loadBalancerClass={}", self.class);
        // The CRDs are the lab's, applied from this build.
        let mut set = vec![class.as_str(), "crds.enabled=false"];
        set.extend(self.ports);
        chart::Release::prepare(lab, self.release, self.release, &chart::dir(), &set).await
    }

    /// The release's pods and the end of their logs, for a failed install.
    fn diagnosis(&self, lab: &Lab) -> String {
        let pods = kubectl(
            lab,
            &["get", "pods", "-n", self.release, "-o", "wide"],
            None,
        )
        .unwrap_or_else(|e| format!("{e:#}"));
        let mut text = format!("pods of {}:\n{pods}", self.release);
        let prefix = format!("{}_", self.release);
        let dirs = std::fs::read_dir(lab.state.join("pods"))
            .into_iter()
            .flatten();
        for dir in dirs.flatten() {
            if !dir.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            for log in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let content = std::fs::read_to_string(log.path()).unwrap_or_default();
                let lines: Vec<&str> = content.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                text.push_str(&format!("\n{}:\n{tail}", log.path().display()));
            }
        }
        text
    }

    fn pool_and_advertisement(&self) -> String {
        format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {pool}\n\
             spec:\n  addresses: [\"{}-{}\"]\n  loadBalancerClass: {class}\n---\n\
             apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {pool}\n\
             spec:\n  ipAddressPools: [{pool}]\n",
            self.range.0,
            self.range.1,
            pool = self.pool,
            class = self.class,
        )
    }
}

/// Both releases (with their speakers' statuses), their pools and
/// advertisements: removed when dropped, also when the test fails, and before
/// the test starts (an interrupted run's).
struct Installations {
    lab: Lab,
    releases: Vec<chart::Release>,
}

impl Installations {
    async fn install(lab: &Lab) -> Result<Self> {
        let mut guard = Self {
            lab: lab.clone(),
            releases: Vec::new(),
        };
        for installation in [&A, &B] {
            guard.releases.push(installation.release(lab).await?);
        }
        remove_pools(lab);
        for (installation, release) in [&A, &B].into_iter().zip(&guard.releases) {
            release
                .install(&[])
                .map_err(|e| e.context(installation.diagnosis(lab)))?;
            kubectl(
                lab,
                &["apply", "-f", "-"],
                Some(&installation.pool_and_advertisement()),
            )?;
        }
        Ok(guard)
    }
}

fn remove_pools(lab: &Lab) {
    for installation in [&A, &B] {
        // The controller that would drop the pool's finalizer once no Service
        // holds its IPs is gone with the release.
        let _ = kubectl(
            lab,
            &[
                "patch",
                "ipaddresspool",
                installation.pool,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
        );
        for kind in ["l2advertisement", "ipaddresspool"] {
            let _ = kubectl(
                lab,
                &["delete", kind, installation.pool, "--ignore-not-found"],
                None,
            );
        }
    }
}

impl Drop for Installations {
    fn drop(&mut self) {
        // The releases first: their controllers keep pools in use.
        self.releases.clear();
        remove_pools(&self.lab);
    }
}

/// An object read with kubectl, as JSON.
fn get(lab: &Lab, args: &[&str]) -> Result<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json", "--show-managed-fields"]);
    let out = kubectl(lab, &all, None)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl get {args:?} printed no JSON"))
}

/// The managers in an object's `managedFields`, with the fields each owns.
fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["manager"].as_str().unwrap_or_default().to_owned(),
                entry["fieldsV1"].to_string(),
            )
        })
        .collect()
}

/// The Service's status and output annotation were written by `ours`'s
/// controller, and nothing of `theirs` touched the Service.
fn check_service_writers(
    service: &Value,
    ours: &Installation,
    theirs: &Installation,
) -> Result<()> {
    let name = service["metadata"]["name"].as_str().unwrap_or_default();
    let managers = managers(service);
    for (field, what) in [
        ("\"f:loadBalancer\"", "status.loadBalancer"),
        (
            "\"f:ferrolb.io/ip-allocated-from-pool\"",
            "the ferrolb.io/ip-allocated-from-pool annotation",
        ),
    ] {
        let owners: Vec<&str> = managers
            .iter()
            .filter(|(_, fields)| fields.contains(field))
            .map(|(m, _)| m.as_str())
            .collect();
        ensure!(
            owners == [ours.controller_manager()],
            "{what} of Service {name} is managed by {owners:?}, not only by {}",
            ours.controller_manager()
        );
    }
    let foreign: Vec<&str> = managers
        .iter()
        .map(|(m, _)| m.as_str())
        .filter(|m| m.contains(theirs.release))
        .collect();
    ensure!(
        foreign.is_empty(),
        "installation {} wrote Service {name} of class {}: managers {foreign:?}",
        theirs.release,
        ours.class
    );
    Ok(())
}

/// The resourceVersion of every object either installation writes, by
/// kind/name.
fn versions(lab: &Lab, namespace: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let selector = format!("ferrolb.io/instance in ({},{})", A.release, B.release);
    let mut lists = vec![
        get(lab, &["services,servicel2statuses", "-n", namespace])?,
        get(lab, &["speakerstatuses", "-l", &selector])?,
    ];
    for installation in [&A, &B] {
        let pool = format!("ipaddresspool/{}", installation.pool);
        let advertisement = format!("l2advertisement/{}", installation.pool);
        lists.push(get(lab, &[&pool, &advertisement])?);
    }
    for list in &lists {
        for item in list["items"].as_array().into_iter().flatten() {
            let key = format!(
                "{}/{}",
                item["kind"].as_str().unwrap_or_default(),
                item["metadata"]["name"].as_str().unwrap_or_default()
            );
            let version = item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            out.insert(key, version);
        }
    }
    Ok(out)
}

/// Every SpeakerStatus of `installation`: one per node, named
/// `<instance>-<node>`, labelled, Ready, and hearing every node's speaker
/// of its own installation (not the other's). By name: its node and how many
/// IPs it announces.
fn speaker_statuses(
    lab: &Lab,
    installation: &Installation,
    nodes: &[String],
) -> Result<Option<BTreeMap<String, (String, u64)>>> {
    let list = get(
        lab,
        &[
            "speakerstatuses",
            "-l",
            &format!("ferrolb.io/instance={}", installation.release),
        ],
    )?;
    let mut found = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let node = item["spec"]["nodeName"].as_str().unwrap_or_default();
        let ready = item["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let peers = item["status"]["peerCount"].as_u64().unwrap_or_default();
        if !ready || usize::try_from(peers).ok() != Some(nodes.len()) {
            return Ok(None);
        }
        let announcing = item["status"]["announcing"].as_u64().unwrap_or_default();
        found.insert(name.to_owned(), (node.to_owned(), announcing));
    }
    let expected: BTreeMap<String, &String> = nodes
        .iter()
        .map(|n| (format!("{}-{n}", installation.release), n))
        .collect();
    let named: BTreeMap<String, &String> = found
        .iter()
        .map(|(name, (node, _))| (name.clone(), node))
        .collect();
    Ok((named == expected).then_some(found))
}

/// The speakers' Events on a Service, as (reporting controller, reporting
/// instance).
fn speaker_events(lab: &Lab, namespace: &str, service: &str) -> Result<Vec<(String, String)>> {
    let list = get(lab, &["events.events.k8s.io", "-n", namespace])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "Service" && e["regarding"]["name"] == service)
        .filter_map(|e| {
            let controller = e["reportingController"].as_str()?;
            controller.starts_with("ferrolb-speaker").then(|| {
                (
                    controller.to_owned(),
                    e["reportingInstance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
        })
        .collect())
}

async fn create_workload(client: &Client, namespace: &str) -> Result<()> {
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
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await?;
    for installation in [&A, &B] {
        // No pool named: the controller of the class picks its own pool.
        let service: Service = serde_json::from_value(json!({
            "metadata": { "name": installation.service() },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": installation.class,
                "selector": { "app": "web" },
                "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
            },
        }))?;
        Api::<Service>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &service)
            .await?;
    }
    Ok(())
}

async fn gossip_key(client: &Client, installation: &Installation) -> Result<Vec<u8>> {
    let secret = Api::<Secret>::namespaced(client.clone(), installation.release)
        .get(&format!("{}-gossip", installation.release))
        .await
        .with_context(|| format!("release {} has no gossip Secret", installation.release))?;
    secret
        .data
        .and_then(|d| d.get("key").map(|k| k.0.clone()))
        .with_context(|| format!("the gossip Secret of {} has no key", installation.release))
}

#[tokio::test]
async fn two_installations_serve_only_their_own_services() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let started = Instant::now();
    let client = lab.client().await?;
    objects::install_crds(&client).await?;
    // The lab binds every LoadBalancer IP on every node (IPVS emulation):
    // with strictARP on, only the speakers answer ARP.
    let _strict_arp = StrictArp::set(lab, true).await?;
    let nodes: Vec<String> = lab.nodes().iter().map(|h| h.name.clone()).collect();

    let _installations = Installations::install(lab).await?;
    eprintln!(
        "both releases installed, pods Ready, after {:.1?}",
        started.elapsed()
    );
    ensure!(
        gossip_key(&client, &A).await? != gossip_key(&client, &B).await?,
        "the two releases share a gossip key"
    );

    let ns = TestNamespace::create(lab, &client, "installations").await?;
    create_workload(&client, ns.name()).await?;

    // Each Service gets an IP of its own class's pool.
    let mut ips = BTreeMap::new();
    for installation in [&A, &B] {
        let service = installation.service();
        let got = objects::wait_for_load_balancer_ips(
            &client,
            ns.name(),
            &service,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| {
            let events = kubectl(
                lab,
                &["describe", "service", &service, "-n", ns.name()],
                None,
            )
            .unwrap_or_else(|e| format!("{e:#}"));
            let pool = kubectl(
                lab,
                &["get", "ipaddresspool", installation.pool, "-o", "yaml"],
                None,
            )
            .unwrap_or_else(|e| format!("{e:#}"));
            e.context(format!("{events}\n{pool}\n{}", installation.diagnosis(lab)))
        })?;
        for ip in &got {
            ensure!(
                installation.contains(*ip)?,
                "Service {service} of class {} got {ip}, not an IP of pool {} ({}-{})",
                installation.class,
                installation.pool,
                installation.range.0,
                installation.range.1
            );
        }
        ips.insert(installation.release, got[0]);
    }
    eprintln!("IPs {ips:?} after {:.1?}", started.elapsed());

    // Both installations' speakers run side by side: one SpeakerStatus per
    // node each, named and labelled per installation, every one hearing its
    // own installation's speakers on every node.
    for installation in [&A, &B] {
        wait_for(
            &format!(
                "a Ready SpeakerStatus {}-<node> per node, each seeing {} peers",
                installation.release,
                nodes.len()
            ),
            Duration::from_secs(60),
            || async { speaker_statuses(lab, installation, &nodes) },
        )
        .await?;
    }

    // Each Service is announced by one node, named in its ServiceL2Status,
    // written by its own installation's speakers; that node's MAC alone
    // answers ARP for the IP, and the client reaches it.
    let mut owners = BTreeMap::new();
    for installation in [&A, &B] {
        let service = installation.service();
        let status = wait_for(
            &format!("the ServiceL2Status of {service} to name a node"),
            Duration::from_secs(30),
            || async {
                let status = get(lab, &["servicel2status", &service, "-n", ns.name()]).ok();
                Ok(status.filter(|s| s["status"]["node"].is_string()))
            },
        )
        .await?;
        let node = status["status"]["node"].as_str().unwrap_or_default();
        ensure!(
            nodes.iter().any(|n| n == node),
            "ServiceL2Status {service} names {node}, not a lab node"
        );
        // One entry for the object, one for its status subresource.
        let writers: BTreeSet<String> = managers(&status).into_iter().map(|(m, _)| m).collect();
        ensure!(
            writers == BTreeSet::from([installation.speaker_manager()]),
            "ServiceL2Status {service} was written by {writers:?}, not only by {}",
            installation.speaker_manager()
        );
        owners.insert(installation.release, node.to_owned());
    }
    // Each installation's speaker on the owner node announces its own IP,
    // and no other speaker of it announces anything (the two IPs may well
    // share a node: then one speaker of each installation announces there).
    for installation in [&A, &B] {
        let owner = format!("{}-{}", installation.release, owners[installation.release]);
        wait_for(
            &format!(
                "{owner} alone to announce one IP among {}'s speakers",
                installation.release
            ),
            Duration::from_secs(30),
            || async {
                let statuses = speaker_statuses(lab, installation, &nodes)?.unwrap_or_default();
                let announcing: BTreeMap<&String, u64> = statuses
                    .iter()
                    .filter(|(_, (_, n))| *n > 0)
                    .map(|(k, (_, n))| (k, *n))
                    .collect();
                Ok((announcing == BTreeMap::from([(&owner, 1)])).then_some(()))
            },
        )
        .await?;
    }
    let client_host = Host::client();
    for installation in [&A, &B] {
        let ip = ips[installation.release];
        let owner = &owners[installation.release];
        wait_for(
            &format!("{ip} to answer ping from the client"),
            Duration::from_secs(30),
            || async { Ok(harness::ping(&client_host, ip)?.then_some(())) },
        )
        .await?;
        let page = wait_for(
            &format!("http://{ip}/ to answer from a web pod"),
            Duration::from_secs(30),
            || async { harness::curl(&client_host, &format!("http://{ip}/")) },
        )
        .await?;
        ensure!(
            page.starts_with("web-"),
            "http://{ip}/ answered {page:?}, not a web pod"
        );
        let IpAddr::V4(v4) = ip else {
            bail!("{ip} is not IPv4");
        };
        let host = lab
            .nodes()
            .into_iter()
            .find(|h| &h.name == owner)
            .with_context(|| format!("no lab node {owner}"))?;
        let mac = lan::mac_of(&host)?.to_lowercase();
        let macs = harness::arping(&client_host, v4, 2)?;
        ensure!(
            macs == [mac.clone()],
            "ARP for {ip} answered by {macs:?}, not only by its owner {owner} ({mac})"
        );
        eprintln!("{ip} ({}) answered by {owner} ({mac})", installation.class);
    }

    // The speakers' Events on each Service come from its own installation.
    for (ours, theirs) in [(&A, &B), (&B, &A)] {
        let service = ours.service();
        let events = wait_for(
            &format!("a speaker Event on Service {service}"),
            Duration::from_secs(30),
            || async {
                let events = speaker_events(lab, ns.name(), &service)?;
                Ok((!events.is_empty()).then_some(events))
            },
        )
        .await?;
        let foreign: Vec<&(String, String)> = events
            .iter()
            .filter(|(controller, instance)| {
                controller != &ours.speaker_manager() || !instance.starts_with(ours.release)
            })
            .collect();
        ensure!(
            foreign.is_empty(),
            "Events on {service} not from {}'s speakers (e.g. {}'s): {foreign:?}",
            ours.release,
            theirs.release
        );
    }

    // Quiet: once everything is in place, neither installation rewrites
    // anything (no status fights, no liveness writes).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions(lab, ns.name())?;
    ensure!(
        before.len() == 2 + 2 + 2 * nodes.len() + 4,
        "expected 2 Services, 2 ServiceL2Statuses, {} SpeakerStatuses, 2 pools and 2 advertisements, found {:?}",
        2 * nodes.len(),
        before.keys().collect::<Vec<_>>()
    );
    tokio::time::sleep(QUIET).await;
    let after = versions(lab, ns.name())?;
    let rewritten: Vec<String> = before
        .iter()
        .filter(|(key, version)| after.get(*key) != Some(version))
        .map(|(key, version)| {
            format!(
                "{key}: {version} -> {}",
                after.get(key).map_or("gone", String::as_str)
            )
        })
        .collect();
    ensure!(
        rewritten.is_empty(),
        "rewritten during {QUIET:?} of quiet:\n{}",
        rewritten.join("\n")
    );

    // Nothing of one installation touched the other's Service.
    for (ours, theirs) in [(&A, &B), (&B, &A)] {
        let service = Api::<Service>::namespaced(client.clone(), ns.name())
            .get(&ours.service())
            .await?;
        let pool = service
            .annotations()
            .get("ferrolb.io/ip-allocated-from-pool")
            .cloned();
        ensure!(
            pool.as_deref() == Some(ours.pool),
            "Service {} says it is from pool {pool:?}, not {}",
            ours.service(),
            ours.pool
        );
        check_service_writers(&serde_json::to_value(&service)?, ours, theirs)?;
    }
    eprintln!(
        "two installations side by side, each serving its own Service, after {:.1?}",
        started.elapsed()
    );
    Ok(())
}

//! The speakers' gossip key: a Secret the leader creates when it is missing.
//!
//! A chart can only make a random key with `lookup` and `randBytes`, and
//! `helm template` (Argo CD, Flux) has no cluster to look up: every render
//! made a new key, so a GitOps release was never in sync and rotated its key
//! on every sync. The chart now renders no key at all; the leader creates the
//! Secret (`--gossip-secret`) when it does not exist, with
//! [`GOSSIP_KEY_LEN`] random bytes, owned by the controller's Deployment
//! (`--gossip-secret-owner`) so that uninstalling removes it.
//!
//! An existing Secret is never changed, valid or not: rotating the key is
//! writing a new one into it (or deleting it, and the leader creates a new
//! one at once). The speakers re-read the Secret and switch over in two
//! phases, so a rotation never splits the membership. A Secret whose key the
//! speakers would refuse is reported (a Warning Event on it and the log), not
//! repaired: someone wrote it, and overwriting their key would be a rotation
//! nobody asked for.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_crds::{GOSSIP_KEY_LEN, GOSSIP_SECRET_KEY};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource as _;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

use crate::reconcile::Notice;
use crate::runtime::Context;

/// The label the created Secret carries, saying who maintains it.
pub const MANAGED_BY: &str = "ferrolb-controller";

/// Event reasons on the Secret.
pub mod reasons {
    /// The leader created the Secret with a new key.
    pub const CREATED: &str = "GossipKeyCreated";
    /// The Secret holds no key the speakers accept.
    pub const INVALID: &str = "InvalidGossipKey";
}

/// What the leader does about the Secret it watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It exists with a key of the right length: nothing to do.
    Valid,
    /// It does not exist: create it.
    Missing,
    /// It exists but the speakers would refuse its key; why.
    Invalid(String),
}

/// Judges the Secret as the watch shows it.
pub fn verdict(secret: Option<&Secret>) -> Verdict {
    let Some(secret) = secret else {
        return Verdict::Missing;
    };
    if secret.metadata.deletion_timestamp.is_some() {
        // Being deleted: it is gone for the speakers soon, and the leader
        // creates the next one once the watch reports the deletion.
        return Verdict::Valid;
    }
    match secret.data.as_ref().and_then(|d| d.get(GOSSIP_SECRET_KEY)) {
        None => Verdict::Invalid(format!(
            "the Secret has no `{GOSSIP_SECRET_KEY}`: the speakers cannot start; \
             delete it and the controller creates a new one"
        )),
        Some(key) if key.0.len() != GOSSIP_KEY_LEN => Verdict::Invalid(format!(
            "`{GOSSIP_SECRET_KEY}` holds {} bytes, not {GOSSIP_KEY_LEN}: the speakers refuse it \
             and keep the key they had; write {GOSSIP_KEY_LEN} random bytes or delete the Secret \
             and the controller creates a new one",
            key.0.len()
        )),
        Some(_) => Verdict::Valid,
    }
}

/// A new Secret named `name` in `namespace` holding `key`, owned by `owner`.
pub fn new_secret(
    name: &str,
    namespace: &str,
    owner: Option<OwnerReference>,
    key: &[u8; GOSSIP_KEY_LEN],
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                ),
                ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "gossip-key".to_owned(),
                ),
            ])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            GOSSIP_SECRET_KEY.to_owned(),
            ByteString(key.to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The owner reference naming `deployment` (deleting it deletes the Secret).
pub fn owner_reference(deployment: &Deployment) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "Deployment".to_owned(),
        name: deployment.metadata.name.clone()?,
        uid: deployment.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

/// Fresh key material from the operating system.
pub fn random_key() -> Result<[u8; GOSSIP_KEY_LEN], getrandom::Error> {
    let mut key = [0; GOSSIP_KEY_LEN];
    getrandom::fill(&mut key)?;
    Ok(key)
}

/// Which Secret the leader keeps.
#[derive(Debug, Clone)]
pub struct KeySecret {
    /// Its namespace (the controller's).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Deployment owning it, if any.
    pub owner: Option<String>,
}

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Keeps the Secret in existence for one term as leader: watches it, and
/// creates it whenever it is missing. Runs until dropped (the term ends).
pub async fn keep(ctx: Context, target: KeySecret) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    let mut events = std::pin::pin!(watcher(api.clone(), config));
    let mut current: Option<Secret> = None;
    let mut initial: Option<Secret> = None;
    let mut synced = false;
    let mut reported: Option<String> = None;
    let mut retry = RETRY_MIN;
    loop {
        let event = if synced && verdict(current.as_ref()) == Verdict::Missing {
            // Missing: create it, then wait for the watch to show it (or
            // retry after a backoff when the create failed).
            if create(&ctx, &api, &target).await {
                retry = RETRY_MIN;
                // `AlreadyExists` or created: the watch delivers it.
                current = Some(Secret::default());
                events.next().await
            } else {
                tokio::select! {
                    e = events.next() => e,
                    () = tokio::time::sleep(retry) => {
                        retry = (retry * 2).min(RETRY_MAX);
                        continue;
                    }
                }
            }
        } else {
            events.next().await
        };
        let Some(event) = event else {
            return;
        };
        match event {
            Ok(watcher::Event::Init) => initial = None,
            Ok(watcher::Event::InitApply(s)) => initial = Some(s),
            Ok(watcher::Event::InitDone) => {
                current = initial.take();
                synced = true;
            }
            Ok(watcher::Event::Apply(s)) => current = Some(s),
            Ok(watcher::Event::Delete(_)) => {
                tracing::info!(secret = %target.name, "the gossip key Secret was deleted; creating a new key");
                current = None;
            }
            Err(error) => {
                tracing::warn!(%error, secret = %target.name, "watching the gossip key Secret failed; retrying");
                ctx.metrics.api_error("watch_secret");
                continue;
            }
        }
        match verdict(current.as_ref()) {
            Verdict::Invalid(why) if synced && reported.as_ref() != Some(&why) => {
                tracing::error!(secret = %target.name, "{why}");
                if let Some(secret) = &current {
                    publish(&ctx, secret, reasons::INVALID, true, why.clone()).await;
                }
                reported = Some(why);
            }
            Verdict::Valid => reported = None,
            _ => {}
        }
    }
}

/// Creates the Secret with a new key; false when it must be tried again.
async fn create(ctx: &Context, api: &Api<Secret>, target: &KeySecret) -> bool {
    let key = match random_key() {
        Ok(k) => k,
        Err(error) => {
            tracing::error!(%error, "the operating system gave no random bytes for the gossip key");
            return false;
        }
    };
    let owner = match &target.owner {
        Some(name) => {
            let deployments: Api<Deployment> =
                Api::namespaced(ctx.client.clone(), &target.namespace);
            // Never without its owner: a Secret created while the
            // installation is being uninstalled (the garbage collector just
            // deleted the key, this replica has not stopped yet) would
            // outlive it.
            match deployments.get_opt(name).await {
                Ok(Some(d)) if d.metadata.deletion_timestamp.is_none() => owner_reference(&d),
                Ok(_) => {
                    tracing::info!(deployment = %name, "the owner of the gossip key Secret is gone (uninstalling?); not creating it");
                    return false;
                }
                Err(error) => {
                    tracing::warn!(%error, deployment = %name, "cannot read the owner of the gossip key Secret; retrying");
                    ctx.metrics.api_error("get_deployment");
                    return false;
                }
            }
        }
        None => None,
    };
    let secret = new_secret(&target.name, &target.namespace, owner, &key);
    if !ctx.fence.allows() {
        ctx.metrics.fenced_write();
        return false;
    }
    let params = PostParams {
        field_manager: Some(ctx.field_manager.clone()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(created) => {
            tracing::info!(secret = %target.name, "created the gossip key Secret with a new key");
            ctx.metrics.api_write("create_secret");
            publish(
                ctx,
                &created,
                reasons::CREATED,
                false,
                format!(
                    "created a new {GOSSIP_KEY_LEN}-byte gossip key; the speakers switch to it \
                     in two phases"
                ),
            )
            .await;
            true
        }
        Err(kube::Error::Api(s)) if s.code == 409 => true,
        Err(error) => {
            tracing::warn!(%error, secret = %target.name, "cannot create the gossip key Secret; retrying");
            ctx.metrics.api_error("create_secret");
            false
        }
    }
}

async fn publish(
    ctx: &Context,
    secret: &Secret,
    reason: &'static str,
    warning: bool,
    note: String,
) {
    let reference: ObjectReference = secret.object_ref(&());
    let notice = Notice {
        reference,
        warning,
        reason,
        note,
    };
    if let Err(error) = ctx.events.publish(&notice).await {
        tracing::debug!(%error, "cannot publish an Event on the gossip key Secret");
        ctx.metrics.api_error("events");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(bytes: &[u8]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                GOSSIP_SECRET_KEY.to_owned(),
                ByteString(bytes.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_missing_secret_is_created_and_an_existing_one_left_alone() {
        assert_eq!(verdict(None), Verdict::Missing);
        assert_eq!(verdict(Some(&with_key(&[7; 32]))), Verdict::Valid);
    }

    #[test]
    fn a_key_the_speakers_refuse_is_reported_not_replaced() {
        let short = verdict(Some(&with_key(&[7; 16])));
        assert!(matches!(&short, Verdict::Invalid(why) if why.contains("16 bytes")));
        let empty = verdict(Some(&Secret::default()));
        assert!(matches!(&empty, Verdict::Invalid(why) if why.contains("no `key`")));
    }

    #[test]
    fn a_secret_being_deleted_is_not_reported() {
        let mut s = Secret::default();
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(verdict(Some(&s)), Verdict::Valid);
    }

    #[test]
    fn the_new_secret_holds_the_key_and_names_its_owner() {
        let deployment = Deployment {
            metadata: ObjectMeta {
                name: Some("ferrolb-controller".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        let owner = owner_reference(&deployment);
        let secret = new_secret("ferrolb-gossip", "ferrolb-system", owner, &[9; 32]);
        assert_eq!(verdict(Some(&secret)), Verdict::Valid);
        let owners = secret.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("Deployment", "u-1")
        );
        assert_eq!(
            secret.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
            MANAGED_BY
        );
    }

    #[test]
    fn keys_are_random() {
        let (a, b) = (random_key().unwrap(), random_key().unwrap());
        assert_ne!(a, b);
        assert_ne!(a, [0; GOSSIP_KEY_LEN]);
    }
}

//! Who may read `/metrics`: the caller's bearer token is checked by the API
//! server (TokenReview), and the user it names must be allowed to `get` the
//! non-resource URL `/metrics` (SubjectAccessReview), as kube-rbac-proxy and
//! controller-runtime's secure metrics do. Decisions are cached briefly.
//!
//! The API calls sit behind [`Reviewer`]; everything else here is plain logic.

mod cache;
mod review;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use thiserror::Error;
use tokio::sync::Semaphore;

use self::cache::{DecisionCache, token_hash};
pub(crate) use self::review::ApiReviewer;

/// The path and verb a scraper must be allowed.
pub(crate) const METRICS_PATH: &str = "/metrics";
const METRICS_VERB: &str = "get";

/// How long an allowed caller is remembered.
const ALLOWED_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is remembered: short, so a new RoleBinding (or a fixed
/// token) works within seconds.
const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Distinct tokens remembered; Prometheus uses one or two.
const CACHE_CAPACITY: usize = 1024;
/// Reviews in flight at once, so a flood of made-up tokens cannot turn into a
/// flood of requests to the API server.
const CONCURRENT_REVIEWS: usize = 4;

/// What a caller of `/metrics` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The metrics.
    Allowed,
    /// 401: no token, or one the API server does not accept.
    Unauthenticated,
    /// 403: a valid token whose user may not get `/metrics`.
    Forbidden {
        /// The user the token belongs to.
        user: String,
    },
}

/// The API server could not review a request; nothing is cached, the caller
/// gets 503 and retries.
#[derive(Debug, Error)]
#[error("cannot {action}: {reason}")]
pub(crate) struct ReviewError {
    /// "review the token" or "review access".
    pub(crate) action: &'static str,
    /// The API error.
    pub(crate) reason: String,
}

/// The API server's reviews.
pub(crate) trait Reviewer: Send + Sync + 'static {
    /// A TokenReview of `token`.
    fn review_token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<TokenReviewStatus, ReviewError>> + Send;

    /// A SubjectAccessReview.
    fn review_access(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> impl Future<Output = Result<SubjectAccessReviewStatus, ReviewError>> + Send;
}

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The user a TokenReview authenticated, if it did.
fn authenticated_user(status: &TokenReviewStatus) -> Option<&UserInfo> {
    if status.authenticated != Some(true) {
        return None;
    }
    status
        .user
        .as_ref()
        .filter(|u| u.username.as_deref().is_some_and(|n| !n.is_empty()))
}

/// The SubjectAccessReview asking whether `user` may get `/metrics`.
fn access_request(user: &UserInfo) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        groups: user.groups.clone(),
        uid: user.uid.clone(),
        extra: user.extra.clone(),
        non_resource_attributes: Some(NonResourceAttributes {
            path: Some(METRICS_PATH.to_owned()),
            verb: Some(METRICS_VERB.to_owned()),
        }),
        resource_attributes: None,
    }
}

/// The decision for `user` given the access review's answer.
fn access_decision(user: &UserInfo, status: &SubjectAccessReviewStatus) -> Decision {
    if status.allowed && status.denied != Some(true) {
        Decision::Allowed
    } else {
        Decision::Forbidden {
            user: user.username.clone().unwrap_or_default(),
        }
    }
}

/// Decides, with a cache, whether bearer tokens may read `/metrics`.
#[derive(Debug)]
pub(crate) struct Authorizer<R> {
    reviewer: R,
    cache: Mutex<DecisionCache>,
    reviews: Semaphore,
}

impl<R: Reviewer> Authorizer<R> {
    /// Decides with `reviewer`.
    pub(crate) fn new(reviewer: R) -> Self {
        Self {
            reviewer,
            cache: Mutex::new(DecisionCache::new(CACHE_CAPACITY)),
            reviews: Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    /// The decision for a request with these headers.
    pub(crate) async fn decide(&self, headers: &HeaderMap) -> Result<Decision, ReviewError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(Decision::Unauthenticated);
        };
        let key = token_hash(token);
        if let Some(decision) = self.cached(&key) {
            return Ok(decision);
        }
        let _permit = self.reviews.acquire().await.map_err(|e| ReviewError {
            action: "review the token",
            reason: e.to_string(),
        })?;
        // Another request may have decided while this one waited.
        if let Some(decision) = self.cached(&key) {
            return Ok(decision);
        }
        let status = self.reviewer.review_token(token).await?;
        let decision = match authenticated_user(&status) {
            None => Decision::Unauthenticated,
            Some(user) => {
                let answer = self.reviewer.review_access(access_request(user)).await?;
                access_decision(user, &answer)
            }
        };
        let ttl = if decision == Decision::Allowed {
            ALLOWED_TTL
        } else {
            REFUSED_TTL
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, decision.clone(), ttl, Instant::now());
        }
        Ok(decision)
    }

    fn cached(&self, key: &cache::TokenHash) -> Option<Decision> {
        self.cache
            .lock()
            .ok()
            .and_then(|c| c.get(key, Instant::now()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::HeaderValue;

    use super::*;

    /// An API server that knows a few tokens and who may read `/metrics`.
    #[derive(Debug, Default)]
    pub(crate) struct FakeApi {
        /// token → user name.
        pub(crate) tokens: BTreeMap<String, String>,
        /// Users allowed to get /metrics.
        pub(crate) readers: Vec<String>,
        /// Whether the API server answers at all.
        pub(crate) down: bool,
        pub(crate) token_reviews: AtomicUsize,
        pub(crate) access_reviews: AtomicUsize,
    }

    impl FakeApi {
        pub(crate) fn new() -> Self {
            Self {
                tokens: BTreeMap::from([
                    (
                        "prometheus-token".into(),
                        "system:serviceaccount:monitoring:prometheus".into(),
                    ),
                    (
                        "other-token".into(),
                        "system:serviceaccount:default:other".into(),
                    ),
                ]),
                readers: vec!["system:serviceaccount:monitoring:prometheus".into()],
                ..Self::default()
            }
        }

        fn unavailable(&self, action: &'static str) -> Result<(), ReviewError> {
            if self.down {
                return Err(ReviewError {
                    action,
                    reason: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    impl Reviewer for FakeApi {
        async fn review_token(&self, token: &str) -> Result<TokenReviewStatus, ReviewError> {
            self.token_reviews.fetch_add(1, Ordering::Relaxed);
            self.unavailable("review the token")?;
            Ok(match self.tokens.get(token) {
                Some(name) => TokenReviewStatus {
                    authenticated: Some(true),
                    user: Some(UserInfo {
                        username: Some(name.clone()),
                        groups: Some(vec!["system:serviceaccounts".into()]),
                        ..UserInfo::default()
                    }),
                    ..TokenReviewStatus::default()
                },
                None => TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("invalid bearer token".into()),
                    ..TokenReviewStatus::default()
                },
            })
        }

        async fn review_access(
            &self,
            spec: SubjectAccessReviewSpec,
        ) -> Result<SubjectAccessReviewStatus, ReviewError> {
            self.access_reviews.fetch_add(1, Ordering::Relaxed);
            self.unavailable("review access")?;
            let attributes = spec.non_resource_attributes.unwrap_or_default();
            let asks_for_metrics = attributes.path.as_deref() == Some("/metrics")
                && attributes.verb.as_deref() == Some("get")
                && spec.resource_attributes.is_none();
            let user = spec.user.unwrap_or_default();
            Ok(SubjectAccessReviewStatus {
                allowed: asks_for_metrics && self.readers.contains(&user),
                ..SubjectAccessReviewStatus::default()
            })
        }
    }

    pub(crate) fn with_token(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(header::AUTHORIZATION, v);
        }
        headers
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&with_token("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with_token("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&with_token("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer_token(&with_token("Bearer ")), None);
        assert_eq!(bearer_token(&with_token("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn only_an_authenticated_review_with_a_user_counts() {
        let user = UserInfo {
            username: Some("u".into()),
            ..UserInfo::default()
        };
        let status = |authenticated, user: Option<UserInfo>| TokenReviewStatus {
            authenticated,
            user,
            ..TokenReviewStatus::default()
        };
        assert!(authenticated_user(&status(Some(true), Some(user.clone()))).is_some());
        assert!(authenticated_user(&status(Some(false), Some(user.clone()))).is_none());
        assert!(authenticated_user(&status(None, Some(user))).is_none());
        assert!(authenticated_user(&status(Some(true), Some(UserInfo::default()))).is_none());
    }

    #[test]
    fn the_access_request_carries_the_whole_identity() {
        let user = UserInfo {
            username: Some("system:serviceaccount:monitoring:prometheus".into()),
            uid: Some("1234".into()),
            groups: Some(vec!["system:serviceaccounts".into()]),
            extra: Some(BTreeMap::from([(
                "authentication.kubernetes.io/pod-name".into(),
                vec!["prometheus-0".into()],
            )])),
        };
        let spec = access_request(&user);
        assert_eq!(spec.user, user.username);
        assert_eq!(spec.uid, user.uid);
        assert_eq!(spec.groups, user.groups);
        assert_eq!(spec.extra, user.extra);
        let attributes = spec.non_resource_attributes.unwrap();
        assert_eq!(attributes.path.as_deref(), Some("/metrics"));
        assert_eq!(attributes.verb.as_deref(), Some("get"));
        assert!(spec.resource_attributes.is_none());
    }

    #[test]
    fn an_explicit_denial_wins() {
        let user = UserInfo {
            username: Some("u".into()),
            ..UserInfo::default()
        };
        let answer = |allowed, denied| SubjectAccessReviewStatus {
            allowed,
            denied,
            ..SubjectAccessReviewStatus::default()
        };
        assert_eq!(
            access_decision(&user, &answer(true, None)),
            Decision::Allowed
        );
        let forbidden = Decision::Forbidden { user: "u".into() };
        assert_eq!(access_decision(&user, &answer(false, None)), forbidden);
        assert_eq!(access_decision(&user, &answer(true, Some(true))), forbidden);
    }

    #[tokio::test]
    async fn decisions_follow_the_reviews_and_are_cached() {
        let gate = Authorizer::new(FakeApi::new());
        assert_eq!(
            gate.decide(&HeaderMap::new()).await.unwrap(),
            Decision::Unauthenticated
        );
        assert_eq!(
            gate.reviewer.token_reviews.load(Ordering::Relaxed),
            0,
            "no token, no review"
        );
        assert_eq!(
            gate.decide(&with_token("Bearer made-up")).await.unwrap(),
            Decision::Unauthenticated
        );
        assert_eq!(
            gate.decide(&with_token("Bearer other-token"))
                .await
                .unwrap(),
            Decision::Forbidden {
                user: "system:serviceaccount:default:other".into()
            }
        );
        for _ in 0..5 {
            assert_eq!(
                gate.decide(&with_token("Bearer prometheus-token"))
                    .await
                    .unwrap(),
                Decision::Allowed
            );
            assert_eq!(
                gate.decide(&with_token("Bearer other-token"))
                    .await
                    .unwrap(),
                Decision::Forbidden {
                    user: "system:serviceaccount:default:other".into()
                }
            );
        }
        // One review per distinct token; none for the made-up token's user.
        assert_eq!(gate.reviewer.token_reviews.load(Ordering::Relaxed), 3);
        assert_eq!(gate.reviewer.access_reviews.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_an_error_and_not_remembered() {
        let mut api = FakeApi::new();
        api.down = true;
        let gate = Authorizer::new(api);
        let error = gate
            .decide(&with_token("Bearer prometheus-token"))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot review the token: connection refused"
        );
        assert!(
            gate.decide(&with_token("Bearer prometheus-token"))
                .await
                .is_err()
        );
        assert_eq!(gate.reviewer.token_reviews.load(Ordering::Relaxed), 2);
    }
}

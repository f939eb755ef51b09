//! [`Reviewer`] against the API server, with the process's own ServiceAccount
//! (which needs `create` on tokenreviews and subjectaccessreviews).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};

use super::{ReviewError, Reviewer};

/// Reviews through the API server.
#[derive(Clone)]
pub(crate) struct ApiReviewer {
    tokens: Api<TokenReview>,
    access: Api<SubjectAccessReview>,
}

impl std::fmt::Debug for ApiReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiReviewer")
    }
}

impl ApiReviewer {
    /// Reviews with `client`.
    pub(crate) fn new(client: kube::Client) -> Self {
        Self {
            tokens: Api::all(client.clone()),
            access: Api::all(client),
        }
    }
}

impl Reviewer for ApiReviewer {
    async fn review_token(&self, token: &str) -> Result<TokenReviewStatus, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                // The API server's own audiences, those of `kubectl create token`
                // and of a projected ServiceAccount token.
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = self
            .tokens
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError {
                action: "review the token",
                reason: e.to_string(),
            })?;
        Ok(answer.status.unwrap_or_default())
    }

    async fn review_access(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> Result<SubjectAccessReviewStatus, ReviewError> {
        let review = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let answer = self
            .access
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError {
                action: "review access",
                reason: e.to_string(),
            })?;
        Ok(answer.status.unwrap_or_default())
    }
}

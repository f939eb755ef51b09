use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::validation;

/// A Kubernetes label selector whose match expressions the API server checks: `In` and
/// `NotIn` need values, `Exists` and `DoesNotExist` take none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub LabelSelector);

impl JsonSchema for Selector {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Selector".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = LabelSelector::json_schema(generator);
        let rules = validation::selector_rules();
        if let Some(object) = schema.as_object_mut() {
            object.insert("x-kubernetes-validations".into(), rules);
        }
        schema
    }
}

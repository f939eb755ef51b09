use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::validation;

/// Most match expressions in one selector, values in one expression, and labels in
/// `matchLabels`. Real selectors use a handful; the bounds let the API server price
/// the selector's CEL rule within its budget.
const MAX_EXPRESSIONS: u32 = 32;
const MAX_VALUES: u32 = 64;
const MAX_LABELS: u32 = 64;
/// A label key: an optional 253-character DNS prefix, a slash and a 63-character name.
const MAX_KEY_LEN: u32 = 317;
const MAX_VALUE_LEN: u32 = 63;

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
        if let Some(object) = schema.as_object_mut() {
            bound(object);
            object.insert(
                "x-kubernetes-validations".into(),
                validation::selector_rules(),
            );
        }
        schema
    }
}

/// Adds size bounds to the upstream LabelSelector schema.
fn bound(selector: &mut serde_json::Map<String, Value>) {
    let Some(Value::Object(properties)) = selector.get_mut("properties") else {
        return;
    };
    if let Some(Value::Object(labels)) = properties.get_mut("matchLabels") {
        labels.insert("maxProperties".into(), json!(MAX_LABELS));
        if let Some(Value::Object(values)) = labels.get_mut("additionalProperties") {
            values.insert("maxLength".into(), json!(MAX_VALUE_LEN));
        }
    }
    let Some(Value::Object(expressions)) = properties.get_mut("matchExpressions") else {
        return;
    };
    expressions.insert("maxItems".into(), json!(MAX_EXPRESSIONS));
    let Some(Value::Object(item)) = expressions.get_mut("items") else {
        return;
    };
    let Some(Value::Object(fields)) = item.get_mut("properties") else {
        return;
    };
    if let Some(Value::Object(key)) = fields.get_mut("key") {
        key.insert("maxLength".into(), json!(MAX_KEY_LEN));
    }
    if let Some(Value::Object(operator)) = fields.get_mut("operator") {
        operator.insert("maxLength".into(), json!(16));
    }
    if let Some(Value::Object(values)) = fields.get_mut("values") {
        values.insert("maxItems".into(), json!(MAX_VALUES));
        if let Some(Value::Object(value)) = values.get_mut("items") {
            value.insert("maxLength".into(), json!(MAX_VALUE_LEN));
        }
    }
}

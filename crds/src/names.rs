//! String newtypes whose schemas carry a length bound and CEL rules.
//!
//! The bound matters beyond validation: the API server estimates the cost of every CEL
//! rule from the maximum size of what it inspects, and rejects a CRD whose rules could
//! be too expensive. Bounded strings keep FerroLB's rules well inside that budget.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validation;

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, rules = $rules:path, description = $description:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The string as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let rules: Value = $rules();
                json_schema!({
                    "type": "string",
                    "maxLength": $max,
                    "description": $description,
                    "x-kubernetes-validations": rules,
                })
            }
        }
    };
}

validated_string!(
    /// One entry of a pool's `spec.addresses`: a CIDR, a same-family range or a single IP.
    PoolAddress,
    max = validation::MAX_ADDRESS_LEN,
    rules = validation::address_rules,
    description = "A CIDR (198.18.0.0/28, 2001:db8::/120), an inclusive range of one family (198.18.0.10-198.18.0.20) or a single IP (198.18.0.7)."
);

validated_string!(
    /// A namespace name.
    NamespaceName,
    max = 63,
    rules = validation::namespace_name_rules,
    description = "A namespace name."
);

validated_string!(
    /// The name of an IPAddressPool.
    PoolName,
    max = 253,
    rules = validation::object_name_rules,
    description = "The name of an IPAddressPool."
);

validated_string!(
    /// A network interface name such as `eth0`.
    InterfaceName,
    max = validation::MAX_INTERFACE_LEN,
    rules = validation::interface_name_rules,
    description = "A network interface name, e.g. eth0."
);

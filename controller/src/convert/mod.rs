//! `ferrolb-controller convert`: a MetalLB installation in, equivalent FerroLB
//! resources out, and a rehearsal of the cutover. Pure: YAML text in, YAML text,
//! a shell script and findings out.
//!
//! Accepted input: what `kubectl get … -A -o yaml` prints (a `List`), multi-document
//! YAML, or both:
//! - MetalLB `IPAddressPool` and `L2Advertisement` objects (`metallb.io/v1beta1`);
//! - the ConfigMap of MetalLB before 0.13 (`data.config` with `address-pools`), or
//!   that `config` document on its own;
//! - Services and Namespaces, to check that every Service keeps its IP;
//! - anything else, which is counted and skipped.
//!
//! The steps, one module each: [`source`] reads the dump as MetalLB sees it;
//! [`names`] gives every pool and advertisement a cluster-wide FerroLB name;
//! [`priority`] maps pool priorities; [`output`] builds the FerroLB objects;
//! [`services`] rewrites Service pool annotations that name renamed pools; and
//! [`rehearsal`] runs the controller's own restore on the result.
//!
//! BGP configuration has no FerroLB equivalent (it announces in layer 2) and is
//! reported, as is every field it does not know.

mod legacy;
pub mod names;
pub mod output;
pub mod priority;
pub mod rehearsal;
pub mod services;
pub mod source;

use serde_json::Value;
use thiserror::Error;

use source::Dump;

/// The input cannot be read, or the output cannot be produced.
#[derive(Debug, Error)]
pub enum ConvertError {
    /// A document is not YAML.
    #[error("document {index} is not valid YAML: {source}")]
    Yaml {
        /// 1-based document number.
        index: usize,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// MetalLB's ConfigMap holds a `config` key that is not valid YAML.
    #[error("ConfigMap {config_map}: data.config is not valid YAML: {source}")]
    Config {
        /// The ConfigMap, `namespace/name`.
        config_map: String,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// A converted object does not read as FerroLB's type (a bug in the conversion).
    #[error("the converted {object} is not a valid FerroLB object: {source}")]
    Output {
        /// The object, e.g. `IPAddressPool prod`.
        object: String,
        /// The error.
        source: serde_json::Error,
    },
    /// An output object cannot be rendered.
    #[error("cannot render the output: {0}")]
    Render(serde_yaml::Error),
}

/// The converted resources and what the user must know about them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conversion {
    /// FerroLB resources, multi-document YAML: pools first, then advertisements.
    pub yaml: String,
    /// A shell script rewriting Services' pool annotations, when any names a pool
    /// whose FerroLB name differs.
    pub script: Option<String>,
    /// One line per thing not converted, changed on the way, or at risk at cutover.
    pub warnings: Vec<String>,
    /// A summary of the rehearsed cutover.
    pub summary: String,
}

/// Converts a MetalLB dump to FerroLB resources.
pub fn convert(input: &str) -> Result<Conversion, ConvertError> {
    let mut dump = Dump::read(input)?;
    let mut warnings = std::mem::take(&mut dump.warnings);
    let resources = output::build(&dump, &mut warnings)?;
    if resources.pools.is_empty() && resources.advertisements.is_empty() {
        warnings.push("no MetalLB layer-2 configuration found in the input".to_owned());
    }
    let patches = services::patches(
        &dump.services,
        &dump.pools,
        &resources.pool_names,
        &mut warnings,
    );
    let patched: Vec<_> = dump
        .services
        .iter()
        .map(|s| services::apply(s, &patches))
        .collect();
    let rehearsal = rehearsal::rehearse(&resources.typed_pools, &patched, &dump.namespaces);
    warnings.extend(rehearsal.findings.iter().cloned());
    let summary = if dump.services.is_empty() {
        "no LoadBalancer Service in the input: add `services` to the dump to check that every Service keeps its IP".to_owned()
    } else {
        format!(
            "{} of {} LoadBalancer Services holding an IP keep it under FerroLB{}",
            rehearsal.kept,
            rehearsal.with_ips,
            if patches.is_empty() {
                String::new()
            } else {
                format!(
                    " once the annotation script has run ({} annotation(s) to rewrite)",
                    patches.len()
                )
            }
        )
    };
    let mut yaml = String::new();
    for object in resources.pools.iter().chain(&resources.advertisements) {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(object).map_err(ConvertError::Render)?);
    }
    Ok(Conversion {
        yaml,
        script: (!patches.is_empty()).then(|| services::script(&patches)),
        warnings,
        summary,
    })
}

/// Parses multi-document YAML output into objects (for tests and tools).
pub fn documents(yaml: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(Value::deserialize)
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

#[cfg(test)]
mod tests;

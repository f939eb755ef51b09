//! The installation a speaker belongs to (`--instance`), and the names that
//! keep two installations on the same nodes apart.
//!
//! Two FerroLB installations with different load-balancer classes run a
//! speaker each on every node. Everything a speaker writes per node (its
//! SpeakerStatus) is named per installation, its server-side-apply field
//! manager says which installation wrote a field, and it reads only its own
//! installation's SpeakerStatus objects. An installation without a name keeps
//! the names FerroLB always used, so an existing single installation sees no
//! change.

use std::collections::BTreeMap;

use ferrolb_crds::INSTANCE_LABEL;

/// Longest instance name: a label value, also used in object names.
const MAX_LEN: usize = 63;

/// The installation of this speaker: `--instance`, empty for none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Instance(Option<String>);

impl Instance {
    /// The installation named `name`; empty means the unnamed installation.
    /// Fails when `name` cannot be a label value and part of an object name.
    pub(crate) fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Ok(Self(None));
        }
        // What a Helm release name may be (a DNS subdomain), within the
        // length of a label value: valid both as the label and in
        // `<instance>-<node>`.
        let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = name.len() <= MAX_LEN
            && name.split('.').all(|part| {
                part.bytes().all(|b| alphanumeric(b) || b == b'-')
                    && part.bytes().next().is_some_and(alphanumeric)
                    && part.bytes().last().is_some_and(alphanumeric)
            });
        if !valid {
            return Err(format!(
                "--instance {name:?} is not a valid installation name: use at most {MAX_LEN} lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. ferrolb-internal (the chart passes the release name)"
            ));
        }
        Ok(Self(Some(name.to_owned())))
    }

    /// The name of the SpeakerStatus of this installation's speaker on
    /// `node`: the node's name, prefixed by the instance when there is one.
    pub(crate) fn status_name(&self, node: &str) -> String {
        match &self.0 {
            Some(instance) => format!("{instance}-{node}"),
            None => node.to_owned(),
        }
    }

    /// The labels of this installation's SpeakerStatus objects.
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|instance| (INSTANCE_LABEL.to_owned(), instance.clone()))
            .collect()
    }

    /// The label selector of this installation's SpeakerStatus objects: its
    /// label, or, without an instance, the absence of any.
    pub(crate) fn selector(&self) -> String {
        match &self.0 {
            Some(instance) => format!("{INSTANCE_LABEL}={instance}"),
            None => format!("!{INSTANCE_LABEL}"),
        }
    }

    /// The server-side-apply field manager (and Event reporter) of this
    /// installation's speakers: one name for all of them, so a new owner's
    /// apply replaces every field the previous owner set.
    pub(crate) fn field_manager(&self) -> String {
        ferrolb_crds::speaker_field_manager(self.0.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_instance_the_names_stay_as_they_were() {
        let unnamed = Instance::new("").unwrap();
        assert_eq!(unnamed, Instance::default());
        assert_eq!(unnamed.status_name("node1"), "node1");
        assert!(unnamed.labels().is_empty());
        assert_eq!(unnamed.selector(), "!ferrolb.io/instance");
        assert_eq!(unnamed.field_manager(), "ferrolb-speaker");
    }

    #[test]
    fn an_instance_names_labels_and_selects_its_own_statuses() {
        let a = Instance::new("ferrolb-a").unwrap();
        assert_eq!(a.status_name("node1"), "ferrolb-a-node1");
        assert_eq!(
            a.labels(),
            BTreeMap::from([("ferrolb.io/instance".to_owned(), "ferrolb-a".to_owned())])
        );
        assert_eq!(a.selector(), "ferrolb.io/instance=ferrolb-a");
        assert_eq!(a.field_manager(), "ferrolb-speaker-ferrolb-a");
        let b = Instance::new("ferrolb-b").unwrap();
        assert_ne!(a.status_name("node1"), b.status_name("node1"));
        assert_ne!(a.field_manager(), b.field_manager());
    }

    #[test]
    fn instance_names_must_fit_labels_and_object_names() {
        for bad in [
            "Ferrolb",
            "a_b",
            "-a",
            "a-",
            "a..b",
            "a.-b",
            ".a",
            "a/b",
            &"a".repeat(64),
        ] {
            let error = Instance::new(bad).unwrap_err();
            assert!(error.contains("--instance"), "{error}");
        }
        for good in ["a", "ferrolb-internal", "r2", "lb.v2", &"a".repeat(63)] {
            assert!(Instance::new(good).is_ok(), "{good}");
        }
    }
}

//! Which Services the controller handles at all.

/// The `--load-balancer-class` setting: without it the controller handles
/// `type: LoadBalancer` Services with no `spec.loadBalancerClass`; with it, only
/// Services of exactly that class. Another implementation may own the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassFilter {
    class: Option<String>,
}

impl ClassFilter {
    /// A filter for the configured class, if any. An empty string counts as unset.
    pub fn new(class: Option<String>) -> Self {
        Self {
            class: class.filter(|c| !c.trim().is_empty()),
        }
    }

    /// Whether a Service of `service_type` (`spec.type`) and `class`
    /// (`spec.loadBalancerClass`) is ours. A Service that stops being ours must be
    /// released by the caller.
    pub fn handles(&self, service_type: &str, class: Option<&str>) -> bool {
        service_type == "LoadBalancer" && class == self.class.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_takes_only_classless_load_balancers() {
        let f = ClassFilter::new(None);
        assert!(f.handles("LoadBalancer", None));
        assert!(!f.handles("LoadBalancer", Some("other.io/lb")));
        assert!(!f.handles("ClusterIP", None));
        assert!(!f.handles("NodePort", None));
        assert_eq!(ClassFilter::new(Some(String::new())), f);
    }

    #[test]
    fn configured_class_takes_only_that_class() {
        let f = ClassFilter::new(Some("ferrolb.io/lb".into()));
        assert!(f.handles("LoadBalancer", Some("ferrolb.io/lb")));
        assert!(!f.handles("LoadBalancer", None));
        assert!(!f.handles("LoadBalancer", Some("other.io/lb")));
    }
}

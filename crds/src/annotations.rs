//! Service annotations FerroLB reads and writes, with the MetalLB spellings it accepts
//! as aliases so clusters migrating from MetalLB keep working unchanged.

/// Requested load-balancer IPs, comma-separated, at most one per family.
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
/// The pool to allocate from.
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// The sharing key: Services with the same key may share an IP.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Output: the pool the Service's IPs came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";

/// MetalLB's current and legacy prefixes, accepted as aliases of `ferrolb.io/`.
pub const METALLB_PREFIXES: [&str; 2] = ["metallb.io/", "metallb.universe.tf/"];

/// The input annotations, each with every spelling FerroLB accepts (ours first).
pub fn spellings(annotation: &str) -> Vec<String> {
    let suffix = annotation.trim_start_matches("ferrolb.io/");
    std::iter::once(annotation.to_owned())
        .chain(METALLB_PREFIXES.iter().map(|p| format!("{p}{suffix}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_spellings_are_aliases() {
        assert_eq!(
            spellings(ADDRESS_POOL),
            [
                "ferrolb.io/address-pool",
                "metallb.io/address-pool",
                "metallb.universe.tf/address-pool"
            ]
        );
    }
}

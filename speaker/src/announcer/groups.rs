//! Solicited-node multicast memberships, refcounted: two owned IPv6
//! addresses that share their last 24 bits share a group, which must stay
//! joined until neither is owned.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use crate::packet::ndp::solicited_node_multicast;

/// One membership: a group on an interface (by index).
pub type Membership = (u32, Ipv6Addr);

/// The memberships held, each with how many owned addresses need it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Memberships {
    held: BTreeMap<Membership, usize>,
}

/// What to change in the kernel to reach a new set of memberships.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MembershipChanges {
    /// Groups to join.
    pub join: Vec<Membership>,
    /// Groups to leave.
    pub leave: Vec<Membership>,
}

impl Memberships {
    /// The memberships needed to hear solicitations for `addresses`, each
    /// announced on the given interfaces.
    pub fn wanted<'a>(
        addresses: impl IntoIterator<Item = (Ipv6Addr, &'a [u32])>,
    ) -> BTreeMap<Membership, usize> {
        let mut wanted = BTreeMap::new();
        for (address, interfaces) in addresses {
            let group = solicited_node_multicast(address);
            for &ifindex in interfaces {
                *wanted.entry((ifindex, group)).or_insert(0) += 1;
            }
        }
        wanted
    }

    /// Moves to `wanted`, returning the joins and leaves that takes: a group
    /// still needed by any address is neither left nor joined again.
    pub fn update(&mut self, wanted: BTreeMap<Membership, usize>) -> MembershipChanges {
        let join = wanted
            .keys()
            .filter(|key| !self.held.contains_key(key))
            .copied()
            .collect();
        let leave = self
            .held
            .keys()
            .filter(|key| !wanted.contains_key(key))
            .copied()
            .collect();
        self.held = wanted;
        MembershipChanges { join, leave }
    }

    /// How many owned addresses need `membership`; 0 when not held.
    #[must_use]
    pub fn count(&self, membership: &Membership) -> usize {
        self.held.get(membership).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
    }

    #[test]
    fn two_addresses_sharing_a_group_keep_it_until_both_are_gone() {
        // 2001:db8::c8 and 2001:db8:1::c8 share ff02::1:ff00:c8.
        let a = vip(0xc8);
        let b = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xc8);
        let group = solicited_node_multicast(a);
        assert_eq!(group, solicited_node_multicast(b));
        let mut memberships = Memberships::default();

        let changes = memberships.update(Memberships::wanted([(a, &[2][..]), (b, &[2][..])]));
        assert_eq!(changes.join, vec![(2, group)]);
        assert!(changes.leave.is_empty());
        assert_eq!(memberships.count(&(2, group)), 2);

        let changes = memberships.update(Memberships::wanted([(b, &[2][..])]));
        assert_eq!(changes, MembershipChanges::default());
        assert_eq!(memberships.count(&(2, group)), 1);

        let changes = memberships.update(Memberships::wanted([]));
        assert_eq!(changes.leave, vec![(2, group)]);
        assert_eq!(memberships.count(&(2, group)), 0);
    }

    #[test]
    fn groups_are_per_interface() {
        let mut memberships = Memberships::default();
        let group = solicited_node_multicast(vip(1));
        let changes = memberships.update(Memberships::wanted([(vip(1), &[2, 3][..])]));
        assert_eq!(changes.join, vec![(2, group), (3, group)]);
        let changes = memberships.update(Memberships::wanted([(vip(1), &[3][..])]));
        assert_eq!(changes.leave, vec![(2, group)]);
        assert!(changes.join.is_empty());
    }
}

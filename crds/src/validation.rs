//! CEL validation rules embedded in the CRDs (`x-kubernetes-validations`).
//!
//! They reject, at admission, everything a single object can get wrong, each with a
//! message that says what is wrong and shows a valid example, so FerroLB needs no
//! validating webhook. The rules use the Kubernetes CEL IP/CIDR library (`isIP`, `ip`,
//! `isCIDR`, `cidr`), available since Kubernetes 1.31.
//!
//! The address rules accept what `ferrolb_address::parse_entry` accepts, with two
//! exceptions the API server's CEL cost budget forces: a *reversed IPv6 range*
//! (`2001:db8::20-2001:db8::10`) and a range covering the entire IPv6 space pass
//! admission, and the controller reports them as an `Invalid` pool condition naming the
//! entry. CEL has no 128-bit integers and the IP library has no ordering; expressing
//! IPv6 order with prefix arithmetic was correct but priced by the API server at over
//! a hundred times its per-rule budget. IPv4 order is checked with plain integers.

use serde_json::{Value, json};

/// Longest pool address entry: two full IPv6 addresses and a dash.
pub const MAX_ADDRESS_LEN: u32 = 100;
/// Most entries in one pool's `spec.addresses`.
pub const MAX_ADDRESSES: u32 = 256;
/// Most items in the name lists of a pool or an advertisement.
pub const MAX_NAMES: u32 = 128;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_INTERFACE_LEN: u32 = 15;

/// Longest `loadBalancerClass`: a DNS subdomain prefix (253), `/` and a name (63), the
/// most a Service's `spec.loadBalancerClass` can hold.
pub const MAX_CLASS_LEN: u32 = 253 + 1 + 63;

const START: &str = "self.split('-')[0]";
const END: &str = "self.split('-')[1]";

fn rule(rule: impl Into<String>, message: &str) -> Value {
    json!({ "rule": rule.into(), "message": message })
}

fn rule_with_expression(rule: impl Into<String>, message: &str, expression: &str) -> Value {
    json!({ "rule": rule.into(), "message": message, "messageExpression": expression })
}

/// `self` is a `start-end` pair of IP addresses (of any families).
fn is_range_of_ips() -> String {
    format!("self.split('-').size() == 2 && isIP({START}) && isIP({END})")
}

/// The integer value of an IPv4 address held in the CEL expression `ip`.
fn ipv4_value(ip: &str) -> String {
    let octet = |i: usize| format!("int({ip}.split('.')[{i}])");
    format!(
        "{} * 16777216 + {} * 65536 + {} * 256 + {}",
        octet(0),
        octet(1),
        octet(2),
        octet(3)
    )
}

/// The rules of one pool address entry (`self` is the string).
pub fn address_rules() -> Value {
    let range = is_range_of_ips();
    json!([
        rule(
            "size(self) > 0",
            "an address entry is empty; use a CIDR (198.18.0.0/28), a range (198.18.0.10-198.18.0.20) or a single IP (198.18.0.7)",
        ),
        rule_with_expression(
            "!self.matches('[[:space:]]')",
            "an address entry contains whitespace; write it without spaces, e.g. 198.18.0.10-198.18.0.20",
            "'\"' + self + '\" contains whitespace; write it without spaces, e.g. 198.18.0.10-198.18.0.20'",
        ),
        rule_with_expression(
            "!self.contains('%')",
            "IPv6 zones (%eth0) are not allowed in pools: a zone only means something on one host; write e.g. 2001:db8::10",
            "'\"' + self + '\" has an IPv6 zone (%...); zones only mean something on one host, write e.g. 2001:db8::10'",
        ),
        rule_with_expression(
            format!("isIP(self) || isCIDR(self) || ({range})"),
            "an address entry must be a CIDR (198.18.0.0/28, 2001:db8::/120), a range of one family (198.18.0.10-198.18.0.20) or a single IP (198.18.0.7)",
            "'\"' + self + '\" is not a CIDR (198.18.0.0/28, 2001:db8::/120), a range of one family (198.18.0.10-198.18.0.20) or a single IP (198.18.0.7)'",
        ),
        rule_with_expression(
            "!isCIDR(self) || cidr(self).ip() == cidr(self).masked().ip()",
            "a CIDR has host bits set below its prefix; use the network address, e.g. 198.18.0.0/24 rather than 198.18.0.5/24",
            "'\"' + self + '\" has host bits set below its prefix; use the first address of the block, e.g. 198.18.0.0/24 rather than 198.18.0.5/24'",
        ),
        rule(
            "!isCIDR(self) || cidr(self).prefixLength() > 0 || cidr(self).ip().family() == 4",
            "::/0 covers the entire IPv6 address space; a pool must be smaller, e.g. 2001:db8::/64",
        ),
        rule_with_expression(
            format!("!({range}) || ip({START}).family() == ip({END}).family()"),
            "a range mixes IPv4 and IPv6; both ends must be of one family, e.g. 198.18.0.10-198.18.0.20 or 2001:db8::10-2001:db8::20",
            "'\"' + self + '\" mixes IPv4 and IPv6; both ends must be of one family, e.g. 198.18.0.10-198.18.0.20'",
        ),
        rule_with_expression(
            format!(
                "!({range}) || ip({START}).family() != 4 || ip({END}).family() != 4 || {} <= {}",
                ipv4_value(START),
                ipv4_value(END)
            ),
            "a range starts after it ends; write the lower address first, e.g. 198.18.0.10-198.18.0.20",
            &format!("'\"' + self + '\" starts after it ends; write ' + {END} + '-' + {START}"),
        ),
    ])
}

/// The rules of a pool spec (`self` is `spec`).
pub fn pool_spec_rules() -> Value {
    json!([rule(
        "size(self.addresses) > 0",
        "spec.addresses lists no addresses; add at least one entry, e.g. addresses: [198.18.0.10-198.18.0.20]",
    )])
}

/// The rules of a pool's `loadBalancerClass` (`self` is the string): what Kubernetes
/// accepts for a Service's `spec.loadBalancerClass`, a qualified name such as
/// `ferrolb.io/internal` (an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 letters, digits, `-`, `_` and `.`, starting and ending alphanumeric).
pub fn load_balancer_class_rules() -> Value {
    json!([
        rule_with_expression(
            "self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",
            "loadBalancerClass must be a qualified name like a Service's spec.loadBalancerClass: an optional DNS subdomain prefix and '/', then letters, digits, '-', '_' or '.', starting and ending with a letter or digit, e.g. ferrolb.io/internal",
            "'\"' + self + '\" is not a qualified name: use an optional DNS subdomain and /, then letters, digits, -, _ or ., starting and ending with a letter or digit, e.g. ferrolb.io/internal'",
        ),
        rule(
            "self.split('/').size() < 2 || size(self.split('/')[0]) <= 253",
            "the prefix of loadBalancerClass (before '/') is a DNS subdomain of at most 253 characters, e.g. ferrolb.io/internal",
        ),
        rule(
            "size(self.split('/')[self.split('/').size() - 1]) <= 63",
            "the name part of loadBalancerClass (after '/') is at most 63 characters, e.g. ferrolb.io/internal",
        ),
    ])
}

/// The rules of a pool's `serviceAllocation`.
pub fn service_allocation_rules() -> Value {
    json!([rule(
        "!has(self.priority) || self.priority >= 0",
        "serviceAllocation.priority must not be negative; lower numbers are tried first, e.g. priority: 10",
    )])
}

/// The rules of a namespace name (`self` is the string).
pub fn namespace_name_rules() -> Value {
    json!([rule_with_expression(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "a namespace name is a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. team-a",
        "'\"' + self + '\" is not a namespace name: use lower-case letters, digits and -, starting and ending with a letter or digit, e.g. team-a'",
    )])
}

/// The rules of an object name such as a pool name (`self` is the string).
pub fn object_name_rules() -> Value {
    json!([rule_with_expression(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "a pool name is a DNS subdomain: lower-case letters, digits, '-' and '.', e.g. production",
        "'\"' + self + '\" is not a valid pool name: use lower-case letters, digits, - and ., e.g. production'",
    )])
}

/// The rules of a network interface name (`self` is the string).
pub fn interface_name_rules() -> Value {
    json!([rule_with_expression(
        "size(self) > 0 && self != '.' && self != '..' && !self.matches('[/:[:space:]]')",
        "an interface name is 1 to 15 characters without '/', ':' or whitespace, e.g. eth0",
        "'\"' + self + '\" is not an interface name: use 1 to 15 characters without /, : or whitespace, e.g. eth0'",
    )])
}

/// The rules of a label selector (`self` is the selector object).
pub fn selector_rules() -> Value {
    json!([rule(
        "!has(self.matchExpressions) || self.matchExpressions.all(e, \
         e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : \
         (e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0)))",
        "matchExpressions: operators In and NotIn need at least one value, Exists and DoesNotExist take none, and no other operator exists; e.g. {key: tier, operator: In, values: [web]}",
    )])
}

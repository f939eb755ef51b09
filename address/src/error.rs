use thiserror::Error;

/// Why a pool address entry was rejected. Every variant names the offending entry and,
/// where one exists, shows what a valid entry looks like.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// The pool lists no addresses at all.
    #[error(
        "the pool lists no addresses; add at least one entry such as \"198.18.0.10-198.18.0.20\""
    )]
    NoEntries,

    /// An entry is the empty string (or only whitespace).
    #[error(
        "an address entry is empty; use a CIDR (\"198.18.0.0/28\"), a range (\"198.18.0.10-198.18.0.20\") or a single IP (\"198.18.0.7\")"
    )]
    EmptyEntry,

    /// An entry contains whitespace, which no address form allows.
    #[error(
        "address entry {entry:?} contains whitespace; write it without spaces, e.g. \"198.18.0.10-198.18.0.20\""
    )]
    Whitespace {
        /// The entry as written.
        entry: String,
    },

    /// An entry carries an IPv6 zone (`%eth0`), which only has meaning on one host.
    #[error(
        "address entry {entry:?} has an IPv6 zone (\"%...\"); zones are link-local to one host and cannot be load-balancer IPs, write e.g. \"2001:db8::10\""
    )]
    Zone {
        /// The entry as written.
        entry: String,
    },

    /// One side of an entry is not an IP address.
    #[error(
        "address entry {entry:?}: {part:?} is not an IP address; use e.g. \"198.18.0.7\" or \"2001:db8::7\""
    )]
    NotAnAddress {
        /// The entry as written.
        entry: String,
        /// The part that failed to parse.
        part: String,
    },

    /// A CIDR entry is malformed (prefix missing, too long or not a number).
    #[error(
        "address entry {entry:?} is not a valid CIDR; use e.g. \"198.18.0.0/28\" or \"2001:db8::/64\""
    )]
    BadCidr {
        /// The entry as written.
        entry: String,
    },

    /// A CIDR entry has bits set below its prefix length.
    #[error(
        "address entry {entry:?} has host bits set below the prefix; did you mean {suggestion:?}?"
    )]
    HostBitsSet {
        /// The entry as written.
        entry: String,
        /// The same prefix with host bits cleared.
        suggestion: String,
    },

    /// A range's two ends are of different families.
    #[error(
        "address range {entry:?} mixes IPv4 and IPv6; both ends must be of one family, e.g. \"198.18.0.10-198.18.0.20\""
    )]
    MixedFamilies {
        /// The entry as written.
        entry: String,
    },

    /// A range's start is above its end.
    #[error(
        "address range {entry:?} starts after it ends; write the lower address first, e.g. {suggestion:?}"
    )]
    Reversed {
        /// The entry as written.
        entry: String,
        /// The same range with its ends swapped.
        suggestion: String,
    },

    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is ambiguous between families.
    #[error(
        "address entry {entry:?} uses an IPv4-mapped IPv6 address; write the IPv4 address itself, e.g. \"198.18.0.7\""
    )]
    Ipv4Mapped {
        /// The entry as written.
        entry: String,
    },

    /// A range covers the whole IPv6 address space, whose size does not fit any counter.
    #[error(
        "address entry {entry:?} covers the entire IPv6 address space; a pool must be smaller, e.g. \"2001:db8::/64\""
    )]
    WholeSpace {
        /// The entry (or the merged entries) concerned.
        entry: String,
    },
}

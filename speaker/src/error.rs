//! The crate's error type for start-up and I/O.

/// What can stop the data plane from starting.
///
/// A packet that does not decode is not an error of this kind: see
/// [`DecodeError`](crate::packet::DecodeError), which the responder counts
/// and drops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A system call of the data plane failed (opening a raw socket,
    /// subscribing to netlink).
    #[error(
        "{context}: {message} (the speaker needs CAP_NET_RAW and a Linux kernel with packet sockets)"
    )]
    Io {
        /// What was being done.
        context: String,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `error` while doing `context`.
    #[must_use]
    pub fn io(context: impl Into<String>, error: &std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

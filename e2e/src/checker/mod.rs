//! The fault lab's checker: what a client on the LAN sees of each VIP while
//! faults are injected, and whether that is what SPEC §4 promises (one MAC
//! answering, named by `ServiceL2Status`, in the client's neighbour entry).
//!
//! [`observer`] runs the client's tools and collects their output into a
//! [`Recording`]; [`capture`] parses their lines; [`timeline`] computes, for a
//! fault window, the time with several MACs answering, the ownership moves,
//! the longest gap between ping replies and how soon the VIP settled, and
//! checks them against an [`Expectation`]. Parsing and analysis are pure and
//! tested with canned output.

pub mod capture;
pub mod observer;
pub mod timeline;

pub use capture::{Frame, FrameKind, Stamp};
pub use observer::{Observer, PROBER_IP, PROBER_MAC, now};
pub use timeline::{Expectation, Recording, Report, Round, Sample, Settle, Window};

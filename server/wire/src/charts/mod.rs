//! The chart repository's untrusted inputs: its paths ([`path`]), upload
//! forms ([`multipart`]), and chart archives with their `Chart.yaml` and
//! provenance files ([`package`]).

pub mod multipart;
pub mod package;
pub mod path;

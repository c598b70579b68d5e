//! The `ember` crate's library half: the REST API, so that tools outside the binary (the
//! `api_request` fuzz target in `fuzz/`) can drive its request framing and routing.

pub mod api;

//! Command-line features beyond `serve`: offline inject/check and the
//! policy service client.

pub mod client;
pub mod offline;

//! Palisade's control plane server: the engine's decisions served over
//! TLS (admission, probes, metrics), the policy sources that feed it
//! (directory, CRDs, pushed policies), and the policy service enforcers
//! talk to, with its storage.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod db;
pub mod http;
pub mod images;
pub mod liveness;
pub mod metrics;
pub mod reply;
pub mod service;
pub mod sources;
pub mod tls;
pub mod workloads;

/// Settings live with the engine (`palisade inject` reads them too).
pub use palisade_engine::settings;

//! Palisade control plane: admission webhooks (mutate: enforcer injection
//! and resource defaults; validate: policy evaluation), served over TLS.

pub mod admission;
pub mod app;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod quantity;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;

//! The Palisade runtime enforcer: runs beside the application in a pod with
//! a shared process namespace, unprivileged, and reports drift and
//! behaviour to the policy service (stopping violators under enforce).

pub mod checks;
pub mod config;
pub mod coverage;
pub mod drift;
pub mod files;
pub mod hidden;
pub mod http;
pub mod launches;
pub mod limits;
pub mod monitor;
pub mod observations;
pub mod owners;
pub mod policy;
pub mod procfs;
pub mod report;
pub mod rules;
pub mod schedule;
pub mod sockets;

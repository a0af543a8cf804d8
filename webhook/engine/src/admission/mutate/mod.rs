//! Sidecar injection and resource defaulting for a pod-shaped object
//! (`{metadata, spec}`: a Pod or any workload's pod template).
//!
//! The mutation is planned from a small typed view of the pod as a list of
//! JSON patch `add` operations: the webhook sends them as they are, and the
//! offline commands and template validation apply them to a JSON value, so
//! both run the same plan. A plan for an already-mutated pod is empty
//! (idempotent, safe under `reinvocationPolicy: IfNeeded`).
//!
//! Every plan yields a pod the apiserver accepts, whatever the input pod
//! (given the input was itself valid); the property test in
//! `admission/properties.rs` checks the rules below against generated
//! pods:
//!
//! - Skipped (no enforcer, resource defaults still apply, reason in the
//!   status annotation): opted out by annotation, `hostNetwork` with
//!   `injection.skip_host_network`, `hostPID` (the apiserver forbids
//!   `shareProcessNamespace` with it), Windows pods (`spec.os.name`).
//! - Degraded (enforcer injected, reason in the status annotation): an
//!   explicit `shareProcessNamespace: false` is kept.
//! - Container defaults never put a request above a limit: a container
//!   that requests a resource but sets no limit gets the default limit or
//!   its request, whichever is larger.
//! - Resources the pod sets at pod level (`spec.resources`) are neither
//!   defaulted on containers nor given to the enforcer: containers without
//!   their own values share the pod's budget, which cannot then be exceeded.
//! - Injected volume names never take a name the pod uses (`-1`, `-2`...
//!   are appended until free).
//! - The enforcer mounts an empty directory at the service-account token
//!   path, so the ServiceAccount admission plugin gives it no API token
//!   (and, having nothing to add, causes no second `/mutate` call).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::enforcer::ImpostorError;
use super::reason::{DegradeReason, SkipReason};

mod container;
mod decisions;
mod plan;
mod prevent;
mod view;

pub use decisions::{decide_skip, sidecar_resources, skip_reason, SkipFacts};
pub use plan::{AddOp, Injector, Mutation};
pub use prevent::{
    ImageCommand, ImageCommands, LaunchFor, LaunchShape, Prevent, Prevention, Unconfined,
    INSTALL_CONTAINER, LAUNCH_VOLUME,
};
pub use view::PodShape;

// What the rooms share with each other and with prevention.
use container::restricted_security_context;
use decisions::unique_name;
use plan::{append, list_exists, raw_json};
use view::ContainerList;

#[cfg(test)]
mod tests;

/// Volume the enforcer keeps its policy cache and report spool in.
pub const STATE_VOLUME: &str = "palisade-enforcer-state";
pub const STATE_DIR: &str = "/var/run/palisade";
/// Downward API volume with the pod's labels (they select runtime policies).
pub const PODINFO_VOLUME: &str = "palisade-podinfo";
pub const PODINFO_DIR: &str = "/etc/palisade/podinfo";
/// Projected service-account token the enforcer reports with.
pub const TOKEN_VOLUME: &str = "palisade-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/palisade";
/// Empty directory over the API token path: the ServiceAccount admission
/// plugin skips containers that already mount something there.
pub const NO_API_TOKEN_VOLUME: &str = "palisade-no-api-token";
pub const API_TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Node label naming the node's operating system.
pub const OS_LABEL: &str = "kubernetes.io/os";

/// Per-pod overrides of the sidecar's resources, merged over the defaults.
pub const RESOURCE_OVERRIDES: [(&str, Section, &str); 4] = [
    ("palisade.dev/sidecar-cpu", Section::Requests, "cpu"),
    ("palisade.dev/sidecar-memory", Section::Requests, "memory"),
    ("palisade.dev/sidecar-cpu-limit", Section::Limits, "cpu"),
    (
        "palisade.dev/sidecar-memory-limit",
        Section::Limits,
        "memory",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Requests,
    Limits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod has the sidecar and defaults once the plan is applied
    /// (possibly already had).
    Injected {
        /// Containers whose resources are defaulted by this plan.
        defaulted: Vec<String>,
        /// What the enforcer cannot see in this pod; empty: everything.
        degraded: Vec<DegradeReason>,
    },
    /// No enforcer, for this reason; resources are still defaulted.
    Skipped {
        reason: SkipReason,
        defaulted: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    #[error("metadata.annotations[{annotation:?}]: {value:?} is not a resource quantity")]
    BadOverride { annotation: String, value: String },
    #[error(
        "metadata.annotations: {request_annotation}={request:?} exceeds \
         {limit_annotation}={limit:?}; a request must not exceed its limit"
    )]
    ConflictingOverrides {
        request_annotation: &'static str,
        request: String,
        limit_annotation: &'static str,
        limit: String,
    },
    #[error(transparent)]
    Impostor(#[from] ImpostorError),
    #[error("{0} must be an object")]
    NotAnObject(&'static str),
    #[error("cannot read the pod: {0}")]
    Unreadable(String),
}

/// Reads a view of the object from its JSON text. A failure is read again
/// with path tracking so that the error names the field
/// (`spec.containers[0].command: invalid type ...`); the common, successful
/// read pays nothing for it.
pub(crate) fn read_text<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, MutateError> {
    serde_json::from_str(text).map_err(|error| {
        let mut reader = serde_json::Deserializer::from_str(text);
        unreadable(
            error,
            serde_path_to_error::deserialize::<_, T>(&mut reader).err(),
        )
    })
}

/// Like [`read_text`], from a parsed value.
pub(crate) fn read_value<T: DeserializeOwned>(value: &Value) -> Result<T, MutateError> {
    T::deserialize(value)
        .map_err(|error| unreadable(error, serde_path_to_error::deserialize::<_, T>(value).err()))
}

/// The error, prefixed with the field it is in when the tracked read names
/// one; otherwise as the first read gave it (an error at the top, or one
/// the tracked read does not see, such as trailing characters).
fn unreadable<E: std::fmt::Display>(
    error: serde_json::Error,
    tracked: Option<serde_path_to_error::Error<E>>,
) -> MutateError {
    match tracked.filter(|t| t.path().iter().next().is_some()) {
        Some(t) => MutateError::Unreadable(format!("{}: {}", t.path(), t.inner())),
        None => MutateError::Unreadable(error.to_string()),
    }
}

//! Types shared by the Palisade control plane (`palisade`) and the runtime
//! enforcer (`palisade-enforcer`).

pub mod backoff;
pub mod exception;
pub mod judge;
pub mod launch;
pub mod net;
pub mod observe;
pub mod path;
pub mod policy;
pub mod wire;

/// Label a namespace carries to opt in to injection and validation.
pub const INJECT_LABEL: &str = "palisade.dev/inject";
/// Pod annotation; `"false"` opts a single pod out of injection.
pub const INJECT_ANNOTATION: &str = "palisade.dev/inject";
/// Pod annotation recording what the injector did.
pub const STATUS_ANNOTATION: &str = "palisade.dev/status";
/// Name of the injected enforcer container.
pub const ENFORCER_CONTAINER: &str = "palisade-enforcer";

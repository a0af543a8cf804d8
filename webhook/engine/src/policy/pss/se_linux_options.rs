//! seLinuxOptions: only the container types; no user or role.

use std::fmt;

use k8s_openapi::api::core::v1::SELinuxOptions;

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::SeLinuxOptions,
    level: Level::Baseline,
    linux_only: false,
    check,
};

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn check(pod: &Pod<'_>, out: &mut Findings) {
    options(
        out,
        &"spec.securityContext",
        None,
        pod.security_context()
            .and_then(|sc| sc.se_linux_options.as_ref()),
    );
    for c in &pod.containers {
        options(
            out,
            &format_args!("{}.securityContext", c.path),
            Some(c.name),
            c.security_context
                .and_then(|sc| sc.se_linux_options.as_ref()),
        );
    }
}

/// The SELinux options at `path`, of `container` when they are one's.
fn options(
    out: &mut Findings,
    path: &dyn fmt::Display,
    container: Option<&str>,
    opts: Option<&SELinuxOptions>,
) {
    let Some(opts) = opts else { return };
    let of = |message: String| match container {
        Some(name) => format!("container {name:?}: {message}"),
        None => message,
    };
    let t = opts.type_.as_deref().unwrap_or("");
    if !SELINUX_TYPES.contains(&t) {
        out.add(
            format!("{path}.seLinuxOptions.type"),
            of(format!("SELinux type {t:?} is not allowed")),
        );
    }
    for (field, v) in [("user", &opts.user), ("role", &opts.role)] {
        if v.as_deref().is_some_and(|s| !s.is_empty()) {
            out.add(
                format!("{path}.seLinuxOptions.{field}"),
                of(format!("setting the SELinux {field} is not allowed")),
            );
        }
    }
}

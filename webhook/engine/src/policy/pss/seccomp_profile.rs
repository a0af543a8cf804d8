//! seccompProfile: baseline forbids Unconfined; restricted requires
//! RuntimeDefault or Localhost, at pod level or on every container.

use k8s_openapi::api::core::v1::SeccompProfile;

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::SeccompProfile,
    level: Level::Baseline,
    linux_only: false,
    check: baseline,
};

pub(super) const RESTRICTED: Control = Control {
    id: ControlId::SeccompProfile,
    level: Level::Restricted,
    linux_only: true,
    check: restricted,
};

fn baseline(pod: &Pod<'_>, out: &mut Findings) {
    let unconfined = |p: Option<&SeccompProfile>| p.is_some_and(|p| p.type_ == "Unconfined");
    if unconfined(
        pod.security_context()
            .and_then(|sc| sc.seccomp_profile.as_ref()),
    ) {
        out.add(
            "spec.securityContext.seccompProfile.type",
            "seccomp profile Unconfined is not allowed",
        );
    }
    for c in &pod.containers {
        if unconfined(
            c.security_context
                .and_then(|sc| sc.seccomp_profile.as_ref()),
        ) {
            out.for_container(
                c,
                format!("{}.securityContext.seccompProfile.type", c.path),
                "seccomp profile Unconfined is not allowed",
            );
        }
    }
}

fn restricted(pod: &Pod<'_>, out: &mut Findings) {
    let allowed = |p: &SeccompProfile| p.type_ == "RuntimeDefault" || p.type_ == "Localhost";
    let pod_profile = pod
        .security_context()
        .and_then(|sc| sc.seccomp_profile.as_ref());
    if pod_profile.is_some_and(|p| !allowed(p)) {
        out.add(
            "spec.securityContext.seccompProfile.type",
            "seccomp profile must be RuntimeDefault or Localhost",
        );
    }
    let pod_ok = pod_profile.is_some_and(allowed);
    for c in &pod.containers {
        let path = format!("{}.securityContext.seccompProfile.type", c.path);
        match c.security_context.and_then(|sc| sc.seccomp_profile.as_ref()) {
            Some(p) if !allowed(p) => {
                out.for_container(c, path, "seccomp profile must be RuntimeDefault or Localhost")
            }
            None if !pod_ok => out.add(
                path,
                format!(
                    "container {:?} must set seccompProfile.type RuntimeDefault or Localhost (or the pod must)",
                    c.name
                ),
            ),
            _ => {}
        }
    }
}

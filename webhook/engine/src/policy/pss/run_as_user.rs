//! runAsUser: never UID 0.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const RESTRICTED: Control = Control {
    id: ControlId::RunAsUser,
    level: Level::Restricted,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    if pod.security_context().and_then(|sc| sc.run_as_user) == Some(0) {
        out.add(
            "spec.securityContext.runAsUser",
            "running as UID 0 is not allowed",
        );
    }
    for c in &pod.containers {
        if c.security_context.and_then(|sc| sc.run_as_user) == Some(0) {
            out.for_container(
                c,
                format!("{}.securityContext.runAsUser", c.path),
                "running as UID 0 is not allowed",
            );
        }
    }
}

//! privileged: no privileged containers.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::Privileged,
    level: Level::Baseline,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for c in &pod.containers {
        if c.security_context.and_then(|sc| sc.privileged) == Some(true) {
            out.for_container(
                c,
                format!("{}.securityContext.privileged", c.path),
                "privileged containers are not allowed",
            );
        }
    }
}

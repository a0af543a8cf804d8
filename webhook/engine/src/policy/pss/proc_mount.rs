//! procMount: only the default /proc mask.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::ProcMount,
    level: Level::Baseline,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for c in &pod.containers {
        if let Some(mount) = c.security_context.and_then(|sc| sc.proc_mount.as_deref()) {
            if mount != "Default" {
                out.for_container(
                    c,
                    format!("{}.securityContext.procMount", c.path),
                    format!("procMount {mount} is not allowed"),
                );
            }
        }
    }
}

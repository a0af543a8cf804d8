//! allowPrivilegeEscalation: every container sets it to false.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const RESTRICTED: Control = Control {
    id: ControlId::AllowPrivilegeEscalation,
    level: Level::Restricted,
    linux_only: true,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for c in &pod.containers {
        if c.security_context
            .and_then(|sc| sc.allow_privilege_escalation)
            != Some(false)
        {
            out.add(
                format!("{}.securityContext.allowPrivilegeEscalation", c.path),
                format!(
                    "container {:?} must set allowPrivilegeEscalation=false",
                    c.name
                ),
            );
        }
    }
}

//! runAsNonRoot: true at pod level (covering containers that leave it
//! unset) or on every container; never false.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const RESTRICTED: Control = Control {
    id: ControlId::RunAsNonRoot,
    level: Level::Restricted,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    let pod_non_root = pod.security_context().and_then(|sc| sc.run_as_non_root);
    if pod_non_root == Some(false) {
        out.add("spec.securityContext.runAsNonRoot", "must not be false");
    }
    for c in &pod.containers {
        let path = format!("{}.securityContext.runAsNonRoot", c.path);
        match c.security_context.and_then(|sc| sc.run_as_non_root) {
            Some(false) => out.for_container(c, path, "must not be false"),
            None if pod_non_root != Some(true) => out.add(
                path,
                format!(
                    "container {:?} must set runAsNonRoot=true (or the pod must)",
                    c.name
                ),
            ),
            _ => {}
        }
    }
}

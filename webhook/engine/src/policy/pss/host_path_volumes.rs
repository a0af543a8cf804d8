//! hostPathVolumes: no hostPath volumes.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::HostPathVolumes,
    level: Level::Baseline,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for (i, v) in pod.spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            out.add(
                format!("spec.volumes[{i}].hostPath"),
                format!("hostPath volume {:?} is not allowed", v.name),
            );
        }
    }
}

//! restrictedVolumes: only configMap, csi, downwardAPI, emptyDir,
//! ephemeral, persistentVolumeClaim, projected and secret. Judged on the
//! raw JSON so that volume sources newer than our Kubernetes types are
//! still seen (and refused).

use serde_json::Value;

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const RESTRICTED: Control = Control {
    id: ControlId::RestrictedVolumes,
    level: Level::Restricted,
    linux_only: false,
    check,
};

const ALLOWED_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for (i, volume) in pod
        .raw_spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for key in volume.as_object().into_iter().flat_map(|o| o.keys()) {
            if key != "name" && !ALLOWED_SOURCES.contains(&key.as_str()) {
                out.add(
                    format!("spec.volumes[{i}].{key}"),
                    format!("volume type {key} is not allowed"),
                );
            }
        }
    }
}

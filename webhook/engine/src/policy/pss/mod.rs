//! Pod Security Standards: every baseline and restricted control, one
//! control per file, named as pod-security-admission names its checks
//! (`staging/src/k8s.io/pod-security-admission/policy/check_*.go`). Paths
//! are relative to the pod (`spec.containers[0].securityContext.privileged`).
//!
//! A level runs its controls in registry order; a restricted control may
//! replace the baseline control of the same name (capabilities, seccomp),
//! and Linux-only controls are skipped for pods declared Windows.

mod allow_privilege_escalation;
mod app_armor_profile;
mod capabilities;
mod host_namespaces;
mod host_path_volumes;
mod host_ports;
mod host_process;
mod privileged;
mod proc_mount;
mod restricted_volumes;
mod run_as_non_root;
mod run_as_user;
mod se_linux_options;
mod seccomp_profile;
mod sysctls;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
use palisade_common::policy::PodSecurityLevel;
use serde_json::Value;

use super::pod::PodSpec;
use super::rules::RuleId;
use super::{ContainerPath, Finding};

/// Fields of the pod the checks read as raw JSON (the `raw_spec` of
/// [`check`]), as field paths from the pod.
pub const RAW_FIELDS: &[&str] = &["spec.volumes"];

/// The controls, by the name pod-security-admission gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlId {
    HostProcess,
    HostNamespaces,
    Privileged,
    Capabilities,
    HostPathVolumes,
    HostPorts,
    AppArmorProfile,
    SeLinuxOptions,
    ProcMount,
    SeccompProfile,
    Sysctls,
    RestrictedVolumes,
    RunAsNonRoot,
    RunAsUser,
    AllowPrivilegeEscalation,
}

impl ControlId {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlId::HostProcess => "hostProcess",
            ControlId::HostNamespaces => "hostNamespaces",
            ControlId::Privileged => "privileged",
            ControlId::Capabilities => "capabilities",
            ControlId::HostPathVolumes => "hostPathVolumes",
            ControlId::HostPorts => "hostPorts",
            ControlId::AppArmorProfile => "appArmorProfile",
            ControlId::SeLinuxOptions => "seLinuxOptions",
            ControlId::ProcMount => "procMount",
            ControlId::SeccompProfile => "seccompProfile",
            ControlId::Sysctls => "sysctls",
            ControlId::RestrictedVolumes => "restrictedVolumes",
            ControlId::RunAsNonRoot => "runAsNonRoot",
            ControlId::RunAsUser => "runAsUser",
            ControlId::AllowPrivilegeEscalation => "allowPrivilegeEscalation",
        }
    }
}

impl fmt::Display for ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lowest level a control belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Baseline,
    Restricted,
}

/// One control of the standard.
struct Control {
    id: ControlId,
    level: Level,
    /// Linux-only: skipped for pods declared Windows (`spec.os.name`).
    linux_only: bool,
    check: fn(&Pod<'_>, &mut Findings),
}

/// Every control, in the order findings are reported. A restricted
/// control whose id a baseline one also has replaces it at restricted.
const CONTROLS: &[Control] = &[
    host_process::BASELINE,
    host_namespaces::BASELINE,
    privileged::BASELINE,
    capabilities::BASELINE,
    host_path_volumes::BASELINE,
    host_ports::BASELINE,
    app_armor_profile::BASELINE,
    se_linux_options::BASELINE,
    proc_mount::BASELINE,
    seccomp_profile::BASELINE,
    sysctls::BASELINE,
    restricted_volumes::RESTRICTED,
    run_as_non_root::RESTRICTED,
    run_as_user::RESTRICTED,
    allow_privilege_escalation::RESTRICTED,
    seccomp_profile::RESTRICTED,
    capabilities::RESTRICTED,
];

/// What the controls read: the typed spec, the pod's annotations, the raw
/// spec (for fields newer than the Kubernetes types) and every container.
struct Pod<'a> {
    spec: &'a PodSpec,
    annotations: &'a BTreeMap<String, String>,
    raw_spec: &'a Value,
    containers: Vec<ContainerRef<'a>>,
}

impl<'a> Pod<'a> {
    fn security_context(&self) -> Option<&'a PodSecurityContext> {
        self.spec.security_context.as_ref()
    }

    fn is_windows(&self) -> bool {
        self.spec.os.as_ref().is_some_and(|os| os.name == "windows")
    }
}

/// One container of any list, with the path it is reported under.
struct ContainerRef<'a> {
    path: ContainerPath,
    name: &'a str,
    security_context: Option<&'a SecurityContext>,
    host_ports: Vec<(usize, i32)>,
}

/// Init containers, containers, then ephemeral containers.
fn containers(spec: &PodSpec) -> Vec<ContainerRef<'_>> {
    let host_ports = |ports: Option<&Vec<k8s_openapi::api::core::v1::ContainerPort>>| {
        ports
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| p.host_port.filter(|hp| *hp != 0).map(|hp| (i, hp)))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for (list, items) in [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ] {
        for (i, c) in items.iter().enumerate() {
            out.push(ContainerRef {
                path: ContainerPath { list, index: i },
                name: &c.name,
                security_context: c.security_context.as_ref(),
                host_ports: host_ports(c.ports.as_ref()),
            });
        }
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(ContainerRef {
            path: ContainerPath {
                list: "spec.ephemeralContainers",
                index: i,
            },
            name: &c.name,
            security_context: c.security_context.as_ref(),
            host_ports: host_ports(c.ports.as_ref()),
        });
    }
    out
}

/// Findings of one control.
struct Findings<'o> {
    id: ControlId,
    out: &'o mut Vec<Finding>,
}

impl Findings<'_> {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Finding {
            rule: RuleId::PodSecurity(self.id).to_string(),
            path: path.into(),
            message: message.into(),
        });
    }

    /// A finding about container `c`: the message names it, since a path's
    /// index alone is hard to map to a manifest.
    fn for_container(
        &mut self,
        c: &ContainerRef<'_>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let message = format!("container {:?}: {}", c.name, message.into());
        self.add(path, message);
    }
}

/// Checks `spec` (and the pod's annotations, for AppArmor) at `level`.
pub fn check(
    level: PodSecurityLevel,
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    raw_spec: &Value,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let restricted = match level {
        PodSecurityLevel::Privileged => return out,
        PodSecurityLevel::Baseline => false,
        PodSecurityLevel::Restricted => true,
    };
    let pod = Pod {
        spec,
        annotations,
        raw_spec,
        containers: containers(spec),
    };
    let windows = pod.is_windows();
    for control in CONTROLS.iter().filter(|c| applies(c, restricted, windows)) {
        let mut findings = Findings {
            id: control.id,
            out: &mut out,
        };
        (control.check)(&pod, &mut findings);
    }
    out
}

/// Whether `control` runs at this level for this pod.
fn applies(control: &Control, restricted: bool, windows: bool) -> bool {
    if control.linux_only && windows {
        return false;
    }
    match control.level {
        Level::Restricted => restricted,
        // Replaced at restricted by the stricter control of the same id.
        Level::Baseline => {
            !restricted
                || !CONTROLS
                    .iter()
                    .any(|c| c.level == Level::Restricted && c.id == control.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(
        level: PodSecurityLevel,
        spec: Value,
        annotations: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let typed: PodSpec = serde_json::from_value(spec.clone()).expect("valid pod spec");
        let ann = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check(level, &typed, &ann, &spec)
            .into_iter()
            .map(|f| (f.rule, f.path))
            .collect()
    }

    fn restricted_container() -> Value {
        json!({
            "name": "app", "image": "app:1",
            "securityContext": {
                "runAsNonRoot": true, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        })
    }

    /// A spec with one restricted-compliant container, merged with `extra`
    /// at the pod level and `container` in the container.
    fn spec(extra: Value, container: Value) -> Value {
        let mut c = restricted_container();
        merge(&mut c, container);
        let mut s = json!({"containers": [c]});
        merge(&mut s, extra);
        s
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn expect(level: PodSecurityLevel, extra: Value, container: Value, rule: &str, path: &str) {
        let found = run(level, spec(extra, container), &[]);
        assert!(
            found
                .iter()
                .any(|(r, p)| r == &format!("podSecurity/{rule}") && p == path),
            "expected {rule} at {path}, got {found:?}"
        );
    }

    use PodSecurityLevel::{Baseline, Restricted};

    #[test]
    fn compliant_pod_passes_both_levels() {
        assert!(run(Restricted, spec(json!({}), json!({})), &[]).is_empty());
        assert!(run(Baseline, spec(json!({}), json!({})), &[]).is_empty());
        assert!(run(
            PodSecurityLevel::Privileged,
            spec(json!({"hostNetwork": true}), json!({})),
            &[]
        )
        .is_empty());
    }

    #[test]
    fn baseline_host_process() {
        expect(
            Baseline,
            json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}),
            json!({}),
            "hostProcess",
            "spec.securityContext.windowsOptions.hostProcess",
        );
        expect(
            Baseline,
            json!({}),
            json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}),
            "hostProcess",
            "spec.containers[0].securityContext.windowsOptions.hostProcess",
        );
    }

    #[test]
    fn baseline_host_namespaces() {
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            expect(
                Baseline,
                json!({field: true}),
                json!({}),
                "hostNamespaces",
                &format!("spec.{field}"),
            );
        }
    }

    #[test]
    fn baseline_privileged() {
        expect(
            Baseline,
            json!({}),
            json!({"securityContext": {"privileged": true}}),
            "privileged",
            "spec.containers[0].securityContext.privileged",
        );
    }

    #[test]
    fn baseline_capabilities() {
        let c = json!({"securityContext": {"capabilities": {"add": ["CHOWN", "SYS_ADMIN"]}}});
        expect(
            Baseline,
            json!({}),
            c.clone(),
            "capabilities",
            "spec.containers[0].securityContext.capabilities.add[1]",
        );
        let found = run(Baseline, spec(json!({}), c), &[]);
        assert_eq!(found.len(), 1, "CHOWN is allowed in baseline: {found:?}");
    }

    #[test]
    fn baseline_host_path_and_host_ports() {
        expect(
            Baseline,
            json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
            json!({}),
            "hostPathVolumes",
            "spec.volumes[0].hostPath",
        );
        expect(
            Baseline,
            json!({}),
            json!({"ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}]}),
            "hostPorts",
            "spec.containers[0].ports[1].hostPort",
        );
        assert!(run(
            Baseline,
            spec(
                json!({}),
                json!({"ports": [{"containerPort": 80, "hostPort": 0}]})
            ),
            &[]
        )
        .is_empty());
    }

    #[test]
    fn baseline_apparmor_fields_and_annotations() {
        expect(
            Baseline,
            json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            json!({}),
            "appArmorProfile",
            "spec.securityContext.appArmorProfile.type",
        );
        expect(
            Baseline,
            json!({}),
            json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            "appArmorProfile",
            "spec.containers[0].securityContext.appArmorProfile.type",
        );
        let key = "container.apparmor.security.beta.kubernetes.io/app";
        let found = run(Baseline, spec(json!({}), json!({})), &[(key, "unconfined")]);
        assert_eq!(
            found,
            vec![(
                "podSecurity/appArmorProfile".into(),
                format!("metadata.annotations[{key:?}]")
            )]
        );
        assert!(run(
            Baseline,
            spec(json!({}), json!({})),
            &[(key, "localhost/custom")]
        )
        .is_empty());
    }

    #[test]
    fn an_empty_apparmor_annotation_is_allowed_like_the_runtime_default() {
        let key = "container.apparmor.security.beta.kubernetes.io/app";
        for level in [Baseline, Restricted] {
            for value in ["", "runtime/default"] {
                assert!(
                    run(level, spec(json!({}), json!({})), &[(key, value)])
                        .iter()
                        .all(|(rule, _)| rule != "podSecurity/appArmorProfile"),
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn baseline_selinux() {
        expect(
            Baseline,
            json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
            json!({}),
            "seLinuxOptions",
            "spec.securityContext.seLinuxOptions.type",
        );
        expect(
            Baseline,
            json!({}),
            json!({"securityContext": {"seLinuxOptions": {"user": "root"}}}),
            "seLinuxOptions",
            "spec.containers[0].securityContext.seLinuxOptions.user",
        );
        expect(
            Baseline,
            json!({}),
            json!({"securityContext": {"seLinuxOptions": {"role": "sysadm_r"}}}),
            "seLinuxOptions",
            "spec.containers[0].securityContext.seLinuxOptions.role",
        );
        assert!(run(Baseline, spec(json!({}), json!({"securityContext": {"seLinuxOptions": {"type": "container_t", "level": "s0:c1"}}})), &[]).is_empty());
    }

    #[test]
    fn baseline_proc_mount_seccomp_sysctls() {
        expect(
            Baseline,
            json!({}),
            json!({"securityContext": {"procMount": "Unmasked"}}),
            "procMount",
            "spec.containers[0].securityContext.procMount",
        );
        expect(
            Baseline,
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            json!({}),
            "seccompProfile",
            "spec.securityContext.seccompProfile.type",
        );
        expect(
            Baseline,
            json!({"securityContext": {"sysctls": [
                {"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}]}}),
            json!({}),
            "sysctls",
            "spec.securityContext.sysctls[1].name",
        );
    }

    #[test]
    fn restricted_volume_types() {
        let s = json!({"volumes": [{"name": "ok", "emptyDir": {}}, {"name": "n", "nfs": {"server": "x", "path": "/"}}]});
        expect(
            Restricted,
            s,
            json!({}),
            "restrictedVolumes",
            "spec.volumes[1].nfs",
        );
    }

    #[test]
    fn restricted_privilege_escalation() {
        expect(
            Restricted,
            json!({}),
            json!({"securityContext": {"allowPrivilegeEscalation": true}}),
            "allowPrivilegeEscalation",
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
        );
    }

    #[test]
    fn restricted_run_as_non_root_pod_level_covers_containers() {
        let mut c = restricted_container();
        c["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("runAsNonRoot");
        let s = json!({"containers": [c.clone()]});
        let found = run(Restricted, s, &[]);
        assert_eq!(
            found,
            vec![(
                "podSecurity/runAsNonRoot".into(),
                "spec.containers[0].securityContext.runAsNonRoot".into()
            )]
        );
        let s = json!({"securityContext": {"runAsNonRoot": true}, "containers": [c]});
        assert!(run(Restricted, s, &[]).is_empty());
        expect(
            Restricted,
            json!({"securityContext": {"runAsNonRoot": false}}),
            json!({}),
            "runAsNonRoot",
            "spec.securityContext.runAsNonRoot",
        );
    }

    #[test]
    fn restricted_run_as_user() {
        expect(
            Restricted,
            json!({"securityContext": {"runAsUser": 0}}),
            json!({}),
            "runAsUser",
            "spec.securityContext.runAsUser",
        );
        expect(
            Restricted,
            json!({}),
            json!({"securityContext": {"runAsUser": 0}}),
            "runAsUser",
            "spec.containers[0].securityContext.runAsUser",
        );
    }

    #[test]
    fn restricted_seccomp_pod_level_or_every_container() {
        let mut c = restricted_container();
        c["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
        let found = run(Restricted, json!({"containers": [c.clone()]}), &[]);
        assert_eq!(
            found,
            vec![(
                "podSecurity/seccompProfile".into(),
                "spec.containers[0].securityContext.seccompProfile.type".into()
            )]
        );
        let s = json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            "containers": [c]});
        assert!(run(Restricted, s, &[]).is_empty());
        expect(
            Restricted,
            json!({}),
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            "seccompProfile",
            "spec.containers[0].securityContext.seccompProfile.type",
        );
    }

    #[test]
    fn restricted_capabilities() {
        expect(
            Restricted,
            json!({}),
            json!({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}),
            "capabilities",
            "spec.containers[0].securityContext.capabilities.drop",
        );
        expect(
            Restricted,
            json!({}),
            json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}}}),
            "capabilities",
            "spec.containers[0].securityContext.capabilities.add[1]",
        );
    }

    #[test]
    fn restricted_checks_init_and_ephemeral_containers() {
        let s = json!({
            "initContainers": [{"name": "init", "image": "i:1"}],
            "containers": [restricted_container()],
            "ephemeralContainers": [{"name": "debug", "image": "d:1",
                "securityContext": {"privileged": true}}]
        });
        let found = run(Restricted, s, &[]);
        assert!(
            found
                .iter()
                .any(|(r, p)| r == "podSecurity/allowPrivilegeEscalation"
                    && p == "spec.initContainers[0].securityContext.allowPrivilegeEscalation"),
            "{found:?}"
        );
        assert!(
            found.iter().any(|(r, p)| r == "podSecurity/privileged"
                && p == "spec.ephemeralContainers[0].securityContext.privileged"),
            "{found:?}"
        );
    }

    #[test]
    fn windows_pods_skip_linux_only_controls() {
        let s = json!({"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "w", "image": "w:1"}]});
        assert!(run(Restricted, s, &[]).is_empty());
    }
}

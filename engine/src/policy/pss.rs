//! Pod Security Standards: every baseline and restricted control, named as
//! pod-security-admission names its checks. Paths are relative to the pod
//! (`spec.containers[0].securityContext.privileged`).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{SeccompProfile, SecurityContext};
use palisade_common::policy::PodSecurityLevel;
use serde_json::Value;

use super::pod::PodSpec;
use super::{ContainerPath, Finding};

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Fields of the pod the checks read as raw JSON (the `raw_spec` of
/// [`check`]), as field paths from the pod.
pub const RAW_FIELDS: &[&str] = &["spec.volumes"];

const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// One container of any list, with the path it is reported under.
struct ContainerRef<'a> {
    path: ContainerPath,
    name: &'a str,
    security_context: Option<&'a SecurityContext>,
    host_ports: Vec<(usize, i32)>,
}

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

/// Checks `spec` (and the pod's annotations, for AppArmor) at `level`.
pub fn check(
    level: PodSecurityLevel,
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    raw_spec: &Value,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if level == PodSecurityLevel::Privileged {
        return findings;
    }
    let containers = containers(spec);
    let restricted = level == PodSecurityLevel::Restricted;
    baseline(spec, annotations, &containers, restricted, &mut findings);
    if restricted {
        restricted_controls(spec, &containers, raw_spec, &mut findings);
    }
    findings
}

fn push(out: &mut Vec<Finding>, rule: &str, path: impl Into<String>, message: impl Into<String>) {
    out.push(Finding {
        rule: format!("podSecurity/{rule}"),
        path: path.into(),
        message: message.into(),
    });
}

fn baseline(
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    containers: &[ContainerRef<'_>],
    restricted: bool,
    out: &mut Vec<Finding>,
) {
    let pod_sc = spec.security_context.as_ref();

    // hostProcess
    if pod_sc
        .and_then(|sc| sc.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
    {
        push(
            out,
            "hostProcess",
            "spec.securityContext.windowsOptions.hostProcess",
            "Windows HostProcess pods are not allowed",
        );
    }
    for c in containers {
        if c.security_context
            .and_then(|sc| sc.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
        {
            push(
                out,
                "hostProcess",
                format!("{}.securityContext.windowsOptions.hostProcess", c.path),
                "Windows HostProcess containers are not allowed",
            );
        }
    }

    // hostNamespaces
    for (field, set) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if set == Some(true) {
            push(
                out,
                "hostNamespaces",
                format!("spec.{field}"),
                format!("sharing the host namespace ({field}) is not allowed"),
            );
        }
    }

    // privileged
    for c in containers {
        if c.security_context.and_then(|sc| sc.privileged) == Some(true) {
            push(
                out,
                "privileged",
                format!("{}.securityContext.privileged", c.path),
                "privileged containers are not allowed",
            );
        }
    }

    // capabilities (baseline); restricted has a stricter version of its own.
    if !restricted {
        for c in containers {
            let added = c
                .security_context
                .and_then(|sc| sc.capabilities.as_ref())
                .and_then(|caps| caps.add.as_ref());
            for (i, cap) in added.into_iter().flatten().enumerate() {
                if !BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                    push(
                        out,
                        "capabilities",
                        format!("{}.securityContext.capabilities.add[{i}]", c.path),
                        format!("adding capability {cap} is not allowed"),
                    );
                }
            }
        }
    }

    // hostPathVolumes
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            push(
                out,
                "hostPathVolumes",
                format!("spec.volumes[{i}].hostPath"),
                format!("hostPath volume {:?} is not allowed", v.name),
            );
        }
    }

    // hostPorts
    for c in containers {
        for (i, port) in &c.host_ports {
            push(
                out,
                "hostPorts",
                format!("{}.ports[{i}].hostPort", c.path),
                format!("hostPort {port} is not allowed"),
            );
        }
    }

    // appArmorProfile: fields and the legacy annotations.
    let unconfined = |t: Option<&str>| t == Some("Unconfined");
    if unconfined(
        pod_sc
            .and_then(|sc| sc.app_armor_profile.as_ref())
            .map(|p| p.type_.as_str()),
    ) {
        push(
            out,
            "appArmorProfile",
            "spec.securityContext.appArmorProfile.type",
            "AppArmor profile Unconfined is not allowed",
        );
    }
    for c in containers {
        if unconfined(
            c.security_context
                .and_then(|sc| sc.app_armor_profile.as_ref())
                .map(|p| p.type_.as_str()),
        ) {
            push(
                out,
                "appArmorProfile",
                format!("{}.securityContext.appArmorProfile.type", c.path),
                "AppArmor profile Unconfined is not allowed",
            );
        }
    }
    for (key, value) in annotations {
        // Like pod-security-admission: empty (the runtime default),
        // runtime/default and localhost/* are allowed.
        if key.starts_with(APPARMOR_ANNOTATION_PREFIX)
            && !value.is_empty()
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            push(
                out,
                "appArmorProfile",
                format!("metadata.annotations[{key:?}]"),
                format!("AppArmor profile {value:?} is not allowed"),
            );
        }
    }

    // seLinuxOptions
    let selinux = |out: &mut Vec<Finding>,
                   path: &dyn fmt::Display,
                   opts: Option<&k8s_openapi::api::core::v1::SELinuxOptions>| {
        let Some(opts) = opts else { return };
        let t = opts.type_.as_deref().unwrap_or("");
        if !SELINUX_TYPES.contains(&t) {
            push(
                out,
                "seLinuxOptions",
                format!("{path}.seLinuxOptions.type"),
                format!("SELinux type {t:?} is not allowed"),
            );
        }
        for (field, v) in [("user", &opts.user), ("role", &opts.role)] {
            if v.as_deref().is_some_and(|s| !s.is_empty()) {
                push(
                    out,
                    "seLinuxOptions",
                    format!("{path}.seLinuxOptions.{field}"),
                    format!("setting the SELinux {field} is not allowed"),
                );
            }
        }
    };
    selinux(
        out,
        &"spec.securityContext",
        pod_sc.and_then(|sc| sc.se_linux_options.as_ref()),
    );
    for c in containers {
        selinux(
            out,
            &format_args!("{}.securityContext", c.path),
            c.security_context
                .and_then(|sc| sc.se_linux_options.as_ref()),
        );
    }

    // procMount
    for c in containers {
        if let Some(mount) = c.security_context.and_then(|sc| sc.proc_mount.as_deref()) {
            if mount != "Default" {
                push(
                    out,
                    "procMount",
                    format!("{}.securityContext.procMount", c.path),
                    format!("procMount {mount} is not allowed"),
                );
            }
        }
    }

    // seccompProfile (baseline): no Unconfined; restricted checks more.
    if !restricted {
        let unconfined = |p: Option<&SeccompProfile>| p.is_some_and(|p| p.type_ == "Unconfined");
        if unconfined(pod_sc.and_then(|sc| sc.seccomp_profile.as_ref())) {
            push(
                out,
                "seccompProfile",
                "spec.securityContext.seccompProfile.type",
                "seccomp profile Unconfined is not allowed",
            );
        }
        for c in containers {
            if unconfined(
                c.security_context
                    .and_then(|sc| sc.seccomp_profile.as_ref()),
            ) {
                push(
                    out,
                    "seccompProfile",
                    format!("{}.securityContext.seccompProfile.type", c.path),
                    "seccomp profile Unconfined is not allowed",
                );
            }
        }
    }

    // sysctls
    for (i, s) in pod_sc
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            push(
                out,
                "sysctls",
                format!("spec.securityContext.sysctls[{i}].name"),
                format!("sysctl {} is not in the safe set", s.name),
            );
        }
    }
}

fn restricted_controls(
    spec: &PodSpec,
    containers: &[ContainerRef<'_>],
    raw_spec: &Value,
    out: &mut Vec<Finding>,
) {
    let pod_sc = spec.security_context.as_ref();
    // Linux-only controls do not apply to pods declared Windows.
    let windows = spec.os.as_ref().is_some_and(|os| os.name == "windows");

    // restrictedVolumes: judged on the raw JSON so that volume sources newer
    // than our Kubernetes types are still seen (and refused).
    for (i, volume) in raw_spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for key in volume.as_object().into_iter().flat_map(|o| o.keys()) {
            if key != "name" && !RESTRICTED_VOLUME_SOURCES.contains(&key.as_str()) {
                push(
                    out,
                    "restrictedVolumes",
                    format!("spec.volumes[{i}].{key}"),
                    format!("volume type {key} is not allowed"),
                );
            }
        }
    }

    // runAsNonRoot: pod-level true covers containers that leave it unset.
    let pod_non_root = pod_sc.and_then(|sc| sc.run_as_non_root);
    if pod_non_root == Some(false) {
        push(
            out,
            "runAsNonRoot",
            "spec.securityContext.runAsNonRoot",
            "must not be false",
        );
    }
    for c in containers {
        match c.security_context.and_then(|sc| sc.run_as_non_root) {
            Some(false) => push(
                out,
                "runAsNonRoot",
                format!("{}.securityContext.runAsNonRoot", c.path),
                "must not be false",
            ),
            None if pod_non_root != Some(true) => push(
                out,
                "runAsNonRoot",
                format!("{}.securityContext.runAsNonRoot", c.path),
                format!(
                    "container {:?} must set runAsNonRoot=true (or the pod must)",
                    c.name
                ),
            ),
            _ => {}
        }
    }

    // runAsUser
    if pod_sc.and_then(|sc| sc.run_as_user) == Some(0) {
        push(
            out,
            "runAsUser",
            "spec.securityContext.runAsUser",
            "running as UID 0 is not allowed",
        );
    }
    for c in containers {
        if c.security_context.and_then(|sc| sc.run_as_user) == Some(0) {
            push(
                out,
                "runAsUser",
                format!("{}.securityContext.runAsUser", c.path),
                "running as UID 0 is not allowed",
            );
        }
    }

    if windows {
        return;
    }

    // allowPrivilegeEscalation
    for c in containers {
        if c.security_context
            .and_then(|sc| sc.allow_privilege_escalation)
            != Some(false)
        {
            push(
                out,
                "allowPrivilegeEscalation",
                format!("{}.securityContext.allowPrivilegeEscalation", c.path),
                format!(
                    "container {:?} must set allowPrivilegeEscalation=false",
                    c.name
                ),
            );
        }
    }

    // seccompProfile (restricted): RuntimeDefault or Localhost, at pod level
    // or on every container; never Unconfined.
    let allowed = |p: &SeccompProfile| p.type_ == "RuntimeDefault" || p.type_ == "Localhost";
    let pod_profile = pod_sc.and_then(|sc| sc.seccomp_profile.as_ref());
    if pod_profile.is_some_and(|p| !allowed(p)) {
        push(
            out,
            "seccompProfile",
            "spec.securityContext.seccompProfile.type",
            "seccomp profile must be RuntimeDefault or Localhost",
        );
    }
    let pod_ok = pod_profile.is_some_and(allowed);
    for c in containers {
        match c.security_context.and_then(|sc| sc.seccomp_profile.as_ref()) {
            Some(p) if !allowed(p) => push(out, "seccompProfile",
                format!("{}.securityContext.seccompProfile.type", c.path),
                "seccomp profile must be RuntimeDefault or Localhost"),
            None if !pod_ok => push(out, "seccompProfile",
                format!("{}.securityContext.seccompProfile.type", c.path),
                format!("container {:?} must set seccompProfile.type RuntimeDefault or Localhost (or the pod must)", c.name)),
            _ => {}
        }
    }

    // capabilities (restricted): drop ALL, add at most NET_BIND_SERVICE.
    for c in containers {
        let caps = c.security_context.and_then(|sc| sc.capabilities.as_ref());
        let drops_all = caps
            .and_then(|caps| caps.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            push(
                out,
                "capabilities",
                format!("{}.securityContext.capabilities.drop", c.path),
                format!("container {:?} must drop ALL capabilities", c.name),
            );
        }
        for (i, cap) in caps
            .and_then(|caps| caps.add.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            if cap != "NET_BIND_SERVICE" {
                push(
                    out,
                    "capabilities",
                    format!("{}.securityContext.capabilities.add[{i}]", c.path),
                    format!("adding capability {cap} is not allowed (only NET_BIND_SERVICE)"),
                );
            }
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

//! Prevention (`runtime.prevent: true` in a policy selecting the pod): app
//! containers start under `palisade-launch`, which confines them with
//! Landlock before it execs their command.
//!
//! - An init container from the enforcer image copies the launcher into an
//!   emptyDir (`palisade-launch --install-to`); app containers mount it
//!   read-only, so the app cannot replace it.
//! - Each app container with a `command` starts as
//!   `palisade-launch -- <command>` (its `args` follow as before), with the
//!   launch policy in `PALISADE_LAUNCH_POLICY`. The command's own directory
//!   counts as a program directory.
//! - A container without `command` runs its image's entrypoint, which the
//!   pod spec does not name: it stays unconfined and the status annotation
//!   says why. Never a broken pod.
//!
//! Reinvocation-safe: a wrapped command and an existing install container
//! are left as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use palisade_common::launch::{
    check_program_dir, LaunchPolicy, DEFAULT_PROGRAM_DIRS, LAUNCHER_DIR, LAUNCHER_PATH, POLICY_ENV,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    append, list_exists, raw_json, restricted_security_context, sidecar_resources, unique_name,
    AddOp, ContainerList, Injector, MutateError, PodShape,
};

/// The emptyDir the launcher is installed into.
pub const LAUNCH_VOLUME: &str = "palisade-launch";
/// The init container that installs it.
pub const INSTALL_CONTAINER: &str = "palisade-launch-install";
/// The launcher inside the enforcer image.
const LAUNCHER_IN_IMAGE: &str = "/usr/local/bin/palisade-launch";

/// What prevention reads of a pod beyond the injector's own view: the
/// labels (they select the policies) and each app container's command,
/// environment names and mount paths. Read only when some policy asks for
/// prevention, so other pods pay nothing for it.
#[derive(Debug, Default, Deserialize)]
pub struct LaunchShape {
    #[serde(default)]
    metadata: Option<LaunchMetadata>,
    #[serde(default)]
    spec: Option<LaunchSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct LaunchMetadata {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct LaunchSpec {
    #[serde(default)]
    containers: Option<Vec<LaunchContainer>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LaunchContainer {
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<EnvName>>,
    #[serde(default)]
    volume_mounts: Option<Vec<MountPath>>,
}

#[derive(Debug, Default, Deserialize)]
struct EnvName {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MountPath {
    #[serde(default)]
    mount_path: Option<String>,
}

impl LaunchShape {
    pub fn from_json(text: &str) -> Result<Self, MutateError> {
        serde_json::from_str(text).map_err(|e| MutateError::Unreadable(e.to_string()))
    }

    pub fn from_value(value: &Value) -> Result<Self, MutateError> {
        LaunchShape::deserialize(value).map_err(|e| MutateError::Unreadable(e.to_string()))
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(&NONE)
    }

    fn container(&self, index: usize) -> Option<&LaunchContainer> {
        self.spec.as_ref()?.containers.as_ref()?.get(index)
    }
}

/// The launch policy for a pod's labels, from the policies that select it
/// (`None`: the pod is not confined).
pub type LaunchFor<'a> = dyn Fn(&BTreeMap<String, String>) -> Option<LaunchPolicy> + 'a;

/// Prevention for one pod: the launch policy the selecting policies give
/// and what the pod says about its containers.
#[derive(Debug, Clone, Copy)]
pub struct Prevent<'a> {
    pub policy: &'a LaunchPolicy,
    pub shape: &'a LaunchShape,
}

/// Why an app container starts without the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unconfined {
    /// No `command` in the pod spec: the image's entrypoint is not known
    /// at admission.
    NoCommand,
    /// The container already mounts something at the launcher's path.
    MountPathTaken,
}

/// What prevention covers in a pod, for the status annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Prevention {
    pub confined: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unconfined: BTreeMap<String, Unconfined>,
}

impl Injector {
    /// Adds the install step and wraps every app container it can.
    pub(super) fn add_prevention(
        &self,
        pod: &PodShape,
        prevent: Prevent<'_>,
        run_as: (i64, Option<i64>),
        ops: &mut Vec<AddOp>,
    ) -> Result<Prevention, MutateError> {
        let installed = pod
            .containers(ContainerList::Init)
            .iter()
            .find(|c| c.name.as_deref() == Some(INSTALL_CONTAINER));
        let volume = match installed {
            Some(install) => install
                .volume_mounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find_map(|m| m.name.clone())
                .unwrap_or_else(|| LAUNCH_VOLUME.to_string()),
            None => {
                let taken: BTreeSet<String> =
                    pod.volume_names().into_iter().map(str::to_string).collect();
                let volume = unique_name(LAUNCH_VOLUME, &taken).into_owned();
                self.add_install_step(pod, &volume, run_as, ops)?;
                volume
            }
        };
        let mut prevention = Prevention::default();
        for (index, container) in pod.containers(ContainerList::App).iter().enumerate() {
            if self
                .identity
                .claim(container.name.as_deref(), container.image.as_deref())
                .is_some()
            {
                continue;
            }
            let name = container.name.clone().unwrap_or_default();
            let Some(needs) = prevent.shape.container(index) else {
                continue;
            };
            let path_taken = needs
                .volume_mounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|m| m.mount_path.as_deref() == Some(LAUNCHER_DIR));
            match needs.command.as_deref() {
                Some([first, ..]) if first == LAUNCHER_PATH => prevention.confined.push(name),
                Some(command) if !command.is_empty() && path_taken => {
                    prevention
                        .unconfined
                        .insert(name, Unconfined::MountPathTaken);
                }
                Some(command) if !command.is_empty() => {
                    wrap(needs, index, command, &volume, prevent.policy, ops);
                    prevention.confined.push(name);
                }
                _ => {
                    prevention.unconfined.insert(name, Unconfined::NoCommand);
                }
            }
        }
        Ok(prevention)
    }

    fn add_install_step(
        &self,
        pod: &PodShape,
        volume: &str,
        (run_as_user, run_as_group): (i64, Option<i64>),
        ops: &mut Vec<AddOp>,
    ) -> Result<(), MutateError> {
        let resources = sidecar_resources(
            &self.settings.sidecar_resources,
            |key| pod.annotation(key).map(str::to_string),
            |name| pod.pod_level_sets(name),
        )?;
        let install = json!({
            "name": INSTALL_CONTAINER,
            "image": self.settings.image,
            "imagePullPolicy": self.settings.image_pull_policy,
            "command": [LAUNCHER_IN_IMAGE, "--install-to", LAUNCHER_DIR],
            "resources": resources,
            "securityContext": restricted_security_context(run_as_user, run_as_group),
            "volumeMounts": [{"name": volume, "mountPath": LAUNCHER_DIR}],
        });
        // First among init containers: it finishes before any app code runs.
        let init_present = pod.spec().init_containers.is_some();
        ops.push(if list_exists(ops, "/spec/initContainers", init_present) {
            AddOp::json("/spec/initContainers/0".into(), &install)
        } else {
            AddOp::json("/spec/initContainers".into(), &[install])
        });
        let definition = json!({"name": volume, "emptyDir": {"sizeLimit": "16Mi"}});
        append(
            ops,
            "/spec/volumes",
            pod.spec().volumes.is_some(),
            vec![raw_json(&definition)],
        );
        Ok(())
    }
}

/// `palisade-launch -- <command>`, the launcher mounted read-only, and the
/// launch policy (unless the container sets its own).
fn wrap(
    container: &LaunchContainer,
    index: usize,
    command: &[String],
    volume: &str,
    launch: &LaunchPolicy,
    ops: &mut Vec<AddOp>,
) {
    let base = format!("/spec/containers/{index}");
    let mut argv = vec![LAUNCHER_PATH.to_string(), "--".to_string()];
    argv.extend(command.iter().cloned());
    ops.push(AddOp::json(format!("{base}/command"), &argv));
    let mount = json!({"name": volume, "mountPath": LAUNCHER_DIR, "readOnly": true});
    append(
        ops,
        &format!("{base}/volumeMounts"),
        container.volume_mounts.is_some(),
        vec![raw_json(&mount)],
    );
    let own_policy = container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|e| e.name.as_deref() == Some(POLICY_ENV));
    if own_policy {
        return;
    }
    let policy = for_command(launch, &command[0]);
    let text = serde_json::to_string(&policy).unwrap_or_default();
    let env = json!({"name": POLICY_ENV, "value": text});
    append(
        ops,
        &format!("{base}/env"),
        container.env.is_some(),
        vec![raw_json(&env)],
    );
}

/// The launch policy with the command's directory as a program directory
/// (when it is absolute, not already covered, and a valid one).
fn for_command(launch: &LaunchPolicy, program: &str) -> LaunchPolicy {
    let mut policy = launch.clone();
    let Some(dir) = Path::new(program).parent().filter(|d| d.is_absolute()) else {
        return policy;
    };
    let covered = DEFAULT_PROGRAM_DIRS
        .iter()
        .map(Path::new)
        .chain(policy.program_dirs.iter().map(|d| d.as_path()))
        .any(|d| dir.starts_with(d));
    if !covered && check_program_dir(dir).is_ok() {
        policy.program_dirs.push(dir.to_path_buf());
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::super::tests::status;
    use super::super::Mutation;
    use super::*;
    use crate::settings::InjectionSettings;
    use std::path::PathBuf;

    fn confine(pod: &Value, settings: &InjectionSettings) -> Mutation {
        let launch = LaunchPolicy {
            program_dirs: vec![PathBuf::from("/opt/tools")],
            ..LaunchPolicy::default()
        };
        let shape = LaunchShape::from_value(pod).unwrap();
        let prevent = Prevent {
            policy: &launch,
            shape: &shape,
        };
        Injector::new(settings)
            .plan(&PodShape::from_value(pod).unwrap(), Some(prevent))
            .unwrap()
    }

    fn applied(pod: &Value, settings: &InjectionSettings) -> Value {
        let mut out = pod.clone();
        let patch: json_patch::Patch =
            serde_json::from_slice(&confine(pod, settings).patch_json()).unwrap();
        json_patch::patch(&mut out, &patch).expect("patch applies");
        out
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [{"name": "migrate", "image": "app:1", "command": ["/app/migrate"]}],
                "containers": [
                    {"name": "app", "image": "app:1", "command": ["/app/bin/server", "--port"],
                     "args": ["8080"], "env": [{"name": "MODE", "value": "prod"}]},
                    {"name": "proxy", "image": "envoy:1"}
                ]
            }
        })
    }

    #[test]
    fn app_commands_start_under_the_launcher_installed_first() {
        for native in [true, false] {
            let settings = InjectionSettings {
                native_sidecar: native,
                ..InjectionSettings::default()
            };
            let out = applied(&pod(), &settings);
            let spec = &out["spec"];
            let init = spec["initContainers"].as_array().unwrap();
            assert_eq!(init[0]["name"], INSTALL_CONTAINER, "native: {native}");
            assert_eq!(
                init[0]["command"],
                json!([LAUNCHER_IN_IMAGE, "--install-to", LAUNCHER_DIR])
            );
            assert_eq!(init[0]["securityContext"]["runAsNonRoot"], true);
            assert_eq!(init[0]["volumeMounts"][0]["name"], LAUNCH_VOLUME);
            let app = &spec["containers"][0];
            assert_eq!(
                app["command"],
                json!([LAUNCHER_PATH, "--", "/app/bin/server", "--port"])
            );
            assert_eq!(app["args"], json!(["8080"]), "args are left as they are");
            let mount = app["volumeMounts"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(
                mount,
                json!({"name": LAUNCH_VOLUME, "mountPath": LAUNCHER_DIR, "readOnly": true})
            );
            let env = app["env"].as_array().unwrap();
            assert_eq!(env[0]["name"], "MODE");
            let policy = LaunchPolicy::from_json(env[1]["value"].as_str().unwrap())
                .expect("the launcher accepts what the injector writes");
            assert_eq!(
                policy.program_dirs,
                [PathBuf::from("/opt/tools"), PathBuf::from("/app/bin")]
            );
            // The app's own init container is not wrapped.
            let migrate = init.iter().find(|c| c["name"] == "migrate").unwrap();
            assert_eq!(migrate["command"], json!(["/app/migrate"]));
            let status = status(&out);
            assert_eq!(
                status["prevention"],
                json!({"confined": ["app"], "unconfined": {"proxy": "no-command"}})
            );
        }
    }

    #[test]
    fn a_container_using_the_launchers_path_is_left_unconfined() {
        let mut pod = pod();
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "tools", "mountPath": LAUNCHER_DIR}]);
        pod["spec"]["volumes"] = json!([{"name": "tools", "emptyDir": {}}]);
        let out = applied(&pod, &InjectionSettings::default());
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["command"][0], "/app/bin/server");
        assert_eq!(app["volumeMounts"].as_array().unwrap().len(), 1);
        let status = status(&out);
        assert_eq!(
            status["prevention"]["unconfined"]["app"],
            "mount-path-taken"
        );
    }

    #[test]
    fn a_confined_pod_is_left_as_it_is_on_reinvocation() {
        let settings = InjectionSettings::default();
        let once = applied(&pod(), &settings);
        let again = confine(&once, &settings);
        assert!(
            again.ops.is_empty(),
            "{}",
            String::from_utf8_lossy(&again.patch_json())
        );
    }

    #[test]
    fn a_container_with_its_own_launch_policy_keeps_it_and_names_never_collide() {
        let mut pod = pod();
        pod["spec"]["containers"][0]["env"] =
            json!([{"name": POLICY_ENV, "value": "{\"programDirs\": [\"/srv\"]}"}]);
        pod["spec"]["volumes"] = json!([{"name": LAUNCH_VOLUME, "emptyDir": {}}]);
        let out = applied(&pod, &InjectionSettings::default());
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["env"].as_array().unwrap().len(), 1);
        let ours = format!("{LAUNCH_VOLUME}-1");
        assert_eq!(app["volumeMounts"][0]["name"], ours.as_str());
        let volumes: Vec<&str> = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(volumes.contains(&LAUNCH_VOLUME) && volumes.contains(&ours.as_str()));
    }

    #[test]
    fn the_commands_directory_becomes_a_program_directory_unless_covered_or_writable() {
        let launch = LaunchPolicy::default();
        let dirs = |program: &str| for_command(&launch, program).program_dirs;
        assert_eq!(dirs("/app/bin/server"), [PathBuf::from("/app/bin")]);
        assert!(dirs("/usr/local/bin/nginx").is_empty(), "under /usr");
        assert!(dirs("/tmp/run").is_empty(), "a temp dir never is one");
        assert!(dirs("server").is_empty(), "relative: looked up in PATH");
        assert!(dirs("/server").is_empty(), "/ is never one");
    }
}

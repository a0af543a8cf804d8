//! What "learn, review, enforce" is measured on: busy pods' observation
//! batches as their enforcers send them (`palisade-bench observe`), a
//! workload's week of observations at the item bound and allowlists the
//! size of a real image's (`benches/learn.rs`). Deterministic: the same
//! seed gives the same pods, so runs compare.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use palisade_common::observe::{
    Observation, ObservationBatch, Observed, ObservedRecord, Protocol, WorkloadObservations,
    WorkloadRecord, WorkloadRef,
};
use palisade_common::policy::{AllowedExecutable, RuntimeRules};
use palisade_common::wire::PodRef;

/// Programs an ordinary application image holds and runs.
const PROGRAMS: &[&str] = &[
    "/app/server",
    "/app/bin/migrate",
    "/app/bin/healthcheck",
    "/usr/local/bin/docker-entrypoint.sh",
    "/usr/local/bin/tini",
    "/bin/sh",
    "/bin/bash",
    "/bin/dash",
    "/bin/cat",
    "/bin/ls",
    "/bin/grep",
    "/bin/sed",
    "/bin/mkdir",
    "/bin/rm",
    "/bin/cp",
    "/bin/mv",
    "/bin/chmod",
    "/bin/date",
    "/bin/sleep",
    "/bin/hostname",
    "/bin/ps",
    "/usr/bin/env",
    "/usr/bin/awk",
    "/usr/bin/mawk",
    "/usr/bin/cut",
    "/usr/bin/tr",
    "/usr/bin/head",
    "/usr/bin/tail",
    "/usr/bin/wc",
    "/usr/bin/sort",
    "/usr/bin/uniq",
    "/usr/bin/xargs",
    "/usr/bin/find",
    "/usr/bin/id",
    "/usr/bin/whoami",
    "/usr/bin/dirname",
    "/usr/bin/basename",
    "/usr/bin/readlink",
    "/usr/bin/curl",
    "/usr/bin/wget",
    "/usr/bin/openssl",
    "/usr/bin/gzip",
    "/usr/bin/tar",
    "/usr/bin/python3",
    "/usr/bin/python3.11",
    "/usr/bin/perl",
    "/usr/bin/jq",
    "/usr/bin/getent",
    "/usr/bin/timeout",
    "/usr/bin/nice",
    "/usr/bin/flock",
    "/usr/bin/logger",
    "/usr/bin/stat",
    "/usr/bin/touch",
    "/usr/bin/tee",
    "/usr/bin/md5sum",
    "/usr/bin/sha256sum",
    "/usr/sbin/nginx",
    "/usr/sbin/logrotate",
    "/usr/sbin/cron",
];

/// Programs of a proxy sidecar's image.
const PROXY_PROGRAMS: &[&str] = &[
    "/usr/local/bin/envoy",
    "/usr/local/bin/pilot-agent",
    "/bin/sh",
    "/usr/bin/curl",
    "/bin/sleep",
    "/usr/bin/env",
];

/// SplitMix64: small, fast and good enough to pick items.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }
}

/// 64 hex digits standing for a file's SHA-256 (or a container ID):
/// stable for the same text.
pub fn hex64(text: &str) -> String {
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    for b in text.bytes() {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = Rng::new(seed);
    (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect()
}

/// How much new behaviour a pod shows beyond what it does all the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A new egress destination every 4th round and a new process name
    /// every 30th (about 70 new items an hour).
    Steady,
    /// 10 new egress destinations every round (a crawler, a CDN client):
    /// reaches the per-workload bound within the hour.
    Noisy,
}

/// An item a container shows again and again: in a round with `chance`
/// percent, at most `max_count` times.
#[derive(Debug, Clone)]
struct Habit {
    item: Observed,
    chance: u64,
    max_count: u64,
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    habits: Vec<Habit>,
}

/// One simulated pod whose enforcer sends a batch every interval.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub profile: Profile,
    containers: Vec<Container>,
    rng: Rng,
    new_egress: u32,
    new_processes: u32,
}

fn executable(image: &str, path: &str) -> Observed {
    Observed::Executable {
        path: path.to_string(),
        sha256: Some(hex64(&format!("{image}:{path}"))),
        from_image: true,
    }
}

fn process(path: &str, parent: &str) -> Observed {
    Observed::Process {
        name: path.rsplit('/').next().unwrap_or(path).to_string(),
        parent: parent.to_string(),
    }
}

fn egress(address: Ipv4Addr, port: u16, protocol: Protocol) -> Observed {
    Observed::Egress {
        address: IpAddr::V4(address),
        port,
        protocol,
    }
}

/// The habits of a container of `image` running `programs`: each program
/// as an executable and as a process (under the entrypoint, a shell or
/// itself), its listeners and its usual destinations.
fn habits(
    image: &str,
    programs: &[&str],
    listen: &[u16],
    destinations: &[(Ipv4Addr, u16, Protocol)],
) -> Vec<Habit> {
    let mut habits = Vec::new();
    for (i, path) in programs.iter().enumerate() {
        // The main program runs all the time; tools now and then.
        let chance = if i == 0 { 100 } else { 50 };
        habits.push(Habit {
            item: executable(image, path),
            chance,
            max_count: 20,
        });
        let parent = ["tini", "sh", "server"][i % 3];
        habits.push(Habit {
            item: process(path, parent),
            chance,
            max_count: 20,
        });
    }
    for &port in listen {
        habits.push(Habit {
            item: Observed::Listen {
                protocol: Protocol::Tcp,
                port,
            },
            chance: 100,
            max_count: 60,
        });
    }
    for &(address, port, protocol) in destinations {
        habits.push(Habit {
            item: egress(address, port, protocol),
            chance: 70,
            max_count: 100,
        });
    }
    habits
}

impl Pod {
    /// Pod `index` of an application `app` (pods of one application run
    /// the same image): an app container with some 50 programs, 3
    /// listeners and 20 destinations, and a proxy sidecar.
    pub fn new(index: usize, app: usize, profile: Profile) -> Self {
        let name = format!("app-{app}-{index}");
        let image = format!("registry.example/app-{app}:1");
        let programs: Vec<&str> = PROGRAMS
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| *i < 4 || !(i + app).is_multiple_of(6))
            .map(|(_, p)| p)
            .collect();
        let destinations: Vec<(Ipv4Addr, u16, Protocol)> = (0..20u8)
            .map(|i| match i {
                0 => (Ipv4Addr::new(10, 96, 0, 10), 53, Protocol::Udp),
                1..=4 => (Ipv4Addr::new(10, 96, 1, i), 5432, Protocol::Tcp),
                5..=8 => (Ipv4Addr::new(10, 96, 2, i), 6379, Protocol::Tcp),
                _ => (
                    Ipv4Addr::new(10, 96, 3 + app as u8 % 8, i),
                    443,
                    Protocol::Tcp,
                ),
            })
            .collect();
        let containers = vec![
            Container {
                id: hex64(&format!("{name}/app")),
                habits: habits(&image, &programs, &[8080, 8443, 9090], &destinations),
            },
            Container {
                id: hex64(&format!("{name}/proxy")),
                habits: habits(
                    "registry.example/proxy:1.30",
                    PROXY_PROGRAMS,
                    &[15001, 15090],
                    &destinations[..3],
                ),
            },
        ];
        Self {
            name,
            profile,
            containers,
            rng: Rng::new(index as u64 + 1),
            new_egress: 0,
            new_processes: 0,
        }
    }

    /// Distinct items it shows all the time.
    pub fn habitual_items(&self) -> usize {
        self.containers.iter().map(|c| c.habits.len()).sum()
    }

    /// What its enforcer sends for round `round`: the sums of what it saw
    /// from `start_ms + round * interval_ms` for `interval_ms`.
    pub fn batch(
        &mut self,
        namespace: &str,
        round: u64,
        start_ms: i64,
        interval_ms: i64,
    ) -> ObservationBatch {
        let from = start_ms + round as i64 * interval_ms;
        let mut observations = Vec::new();
        let rng = &mut self.rng;
        let sighting = |rng: &mut Rng, container: &str, item: Observed, max_count: u64| {
            let first_ms = from + rng.below(interval_ms as u64) as i64;
            let last_ms = first_ms + rng.below((from + interval_ms - first_ms) as u64) as i64;
            Observation {
                container: container.to_string(),
                item,
                count: 1 + rng.below(max_count),
                first_ms,
                last_ms,
            }
        };
        for container in &self.containers {
            for habit in &container.habits {
                if rng.percent(habit.chance) {
                    observations.push(sighting(
                        rng,
                        &container.id,
                        habit.item.clone(),
                        habit.max_count,
                    ));
                }
            }
        }
        let app = &self.containers[0].id;
        let new_destinations = match self.profile {
            Profile::Steady => u32::from(round.is_multiple_of(4)),
            Profile::Noisy => 10,
        };
        for _ in 0..new_destinations {
            self.new_egress += 1;
            let n = self.new_egress;
            let address = Ipv4Addr::new(100, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
            observations.push(sighting(rng, app, egress(address, 443, Protocol::Tcp), 5));
        }
        if round.is_multiple_of(30) {
            self.new_processes += 1;
            let name = format!("/app/jobs/job-{}", self.new_processes);
            observations.push(sighting(rng, app, process(&name, "cron"), 1));
        }
        ObservationBatch {
            pod: PodRef {
                namespace: namespace.to_string(),
                name: self.name.clone(),
                uid: hex64(&self.name)[..36].to_string(),
            },
            observations,
            overflow: 0,
        }
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A Deployment's observations over the week before `now_ms`, `items`
/// distinct items across an app, a proxy and a log-shipper container:
/// each container's programs (as executables and processes), listeners,
/// and destinations making up the rest, as a workload at the bound holds
/// them. Tallies start in the week's first day and end in its last.
pub fn week_of_observations(items: usize, now_ms: i64) -> WorkloadObservations {
    let mut rng = Rng::new(7);
    let start = now_ms - 7 * DAY_MS;
    let tally = |rng: &mut Rng, container: &str, item: Observed, image: &str| {
        let first_ms = start + rng.below(DAY_MS as u64) as i64;
        let last_ms = now_ms - rng.below(DAY_MS as u64) as i64;
        ObservedRecord {
            container: container.to_string(),
            item,
            image: image.to_string(),
            count: 1 + rng.below(100_000),
            first_ms,
            last_ms,
        }
    };
    let containers = [
        ("app", "registry.example/web@sha256:", PROGRAMS, 8080u16),
        (
            "proxy",
            "registry.example/proxy@sha256:",
            PROXY_PROGRAMS,
            15001,
        ),
        (
            "log-shipper",
            "registry.example/shipper@sha256:",
            &PROGRAMS[5..30],
            2020,
        ),
    ];
    let mut observed = Vec::with_capacity(items);
    for (name, image, programs, port) in containers {
        let image = format!("{image}{}", hex64(image));
        for (i, path) in programs.iter().enumerate() {
            observed.push(tally(&mut rng, name, executable(&image, path), &image));
            let parent = ["tini", "sh", "server"][i % 3];
            observed.push(tally(&mut rng, name, process(path, parent), &image));
        }
        for port in [port, port + 1] {
            let listen = Observed::Listen {
                protocol: Protocol::Tcp,
                port,
            };
            observed.push(tally(&mut rng, name, listen, &image));
        }
    }
    // A program dropped once, not the image's own.
    observed.push(tally(
        &mut rng,
        "app",
        Observed::Executable {
            path: "/tmp/update.sh".into(),
            sha256: Some(hex64("update.sh")),
            from_image: false,
        },
        "",
    ));
    let mut n = 0u32;
    while observed.len() < items {
        n += 1;
        let (port, protocol) = match n % 10 {
            0 => (53, Protocol::Udp),
            1 => (5432, Protocol::Tcp),
            _ => (443, Protocol::Tcp),
        };
        let address = Ipv4Addr::new(100, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
        observed.push(tally(&mut rng, "app", egress(address, port, protocol), ""));
    }
    observed.truncate(items);
    WorkloadObservations {
        workload: WorkloadRecord {
            workload: WorkloadRef {
                namespace: "shop".into(),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            pod_labels: BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("pod-template-hash".to_string(), "5d8c7b9f4".to_string()),
            ]),
            mode: None,
            first_ms: start,
            last_new_ms: now_ms - DAY_MS,
            last_seen_ms: now_ms,
            items: items as u64,
            overflow: 0,
        },
        observed,
    }
}

/// `allowedExecutables` of `n` entries, each pinned by content: an image's
/// programs, then as many more as needed under `/usr/lib` (a big image's
/// helpers).
pub fn allowlist(n: usize) -> RuntimeRules {
    let allowed_executables = (0..n)
        .map(|i| {
            let path = match PROGRAMS.get(i) {
                Some(p) => p.to_string(),
                None => format!("/usr/lib/pkg-{}/bin/tool-{i}", i % 97),
            };
            AllowedExecutable {
                sha256: Some(hex64(&path)),
                path,
            }
        })
        .collect();
    RuntimeRules {
        allowed_executables,
        ..RuntimeRules::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn simulated_batches_are_what_the_service_accepts() {
        let mut pod = Pod::new(3, 3, Profile::Noisy);
        for round in 0..3 {
            let batch = pod.batch("bench", round, 0, 15_000);
            assert!(batch.observations.len() <= 500, "an enforcer's batch");
            for o in &batch.observations {
                assert_eq!(o.item.check(), Ok(()), "{:?}", o.item);
                assert!(o.first_ms <= o.last_ms && o.count >= 1);
                assert!((round as i64 * 15_000..(round as i64 + 1) * 15_000).contains(&o.last_ms));
            }
        }
    }

    #[test]
    fn a_noisy_pod_outgrows_the_bound_within_the_hour_and_a_steady_one_does_not() {
        let distinct = |profile| {
            let mut pod = Pod::new(1, 1, profile);
            let mut keys = BTreeSet::new();
            for round in 0..240 {
                for o in pod.batch("bench", round, 0, 15_000).observations {
                    keys.insert((o.container, o.item.key()));
                }
            }
            keys.len()
        };
        assert!(distinct(Profile::Noisy) > 2000);
        let steady = distinct(Profile::Steady);
        assert!((100..400).contains(&steady), "{steady}");
    }

    #[test]
    fn a_week_at_the_bound_has_that_many_distinct_items() {
        let week = week_of_observations(2000, 10 * DAY_MS);
        let keys: BTreeSet<_> = week
            .observed
            .iter()
            .map(|o| (o.container.clone(), o.item.key()))
            .collect();
        assert_eq!(keys.len(), 2000);
        assert!(week.observed.iter().all(|o| o.first_ms < 4 * DAY_MS));
    }

    #[test]
    fn allowlists_name_distinct_paths() {
        let rules = allowlist(2000);
        let paths: BTreeSet<_> = rules
            .allowed_executables
            .iter()
            .map(|a| a.path.as_str())
            .collect();
        assert_eq!(paths.len(), 2000);
    }
}

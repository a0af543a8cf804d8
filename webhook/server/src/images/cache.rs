//! What the image lookups remember: image configs by manifest digest (one
//! per platform for an index), the
//! digest each tag pointed at when last seen, and recent failures. Pure
//! (time comes in as an argument), bounded, tested alone.
//!
//! Hand-written rather than an LRU crate: eviction scans at most
//! `capacity` entries and runs only on a miss, which has just cost a
//! registry round trip.

use std::collections::HashMap;

use super::failure::LookupFailure;
use super::platforms::Platforms;
use std::time::{Duration, Instant};

/// An image's own command, from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl ImageConfig {
    /// The command's size, as the cache and the patch carry it.
    pub fn bytes(&self) -> usize {
        self.entrypoint
            .iter()
            .chain(&self.cmd)
            .map(String::len)
            .sum()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub capacity: usize,
    pub tag_ttl: Duration,
    pub failure_ttl: Duration,
}

#[derive(Debug)]
pub struct LookupCache {
    limits: CacheLimits,
    configs: HashMap<String, (Platforms, Instant)>,
    tags: HashMap<String, (String, Instant)>,
    failures: HashMap<String, (LookupFailure, Instant)>,
}

impl LookupCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            configs: HashMap::new(),
            tags: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// The manifest digest of `reference` and its configs, without asking
    /// the registry; `None`: unknown, or its tag's digest is stale (ask the
    /// registry for the current digest, then [`LookupCache::by_digest`]).
    /// `digest` is the reference's digest when it is pinned to one (then no
    /// tag is involved and nothing expires).
    pub fn get(
        &mut self,
        reference: &str,
        digest: Option<&str>,
        now: Instant,
    ) -> Option<(String, Platforms)> {
        let digest = match digest {
            Some(digest) => digest.to_string(),
            None => match self.tags.get(reference) {
                Some((digest, seen)) if now.duration_since(*seen) < self.limits.tag_ttl => {
                    digest.clone()
                }
                _ => return None,
            },
        };
        let platforms = self.by_digest(&digest, now)?;
        Some((digest, platforms))
    }

    /// Why the lookup under `key` failed, if it did within the failure TTL.
    pub fn recent_failure(&mut self, key: &str, now: Instant) -> Option<LookupFailure> {
        let (failure, at) = self.failures.get(key)?;
        if now.duration_since(*at) < self.limits.failure_ttl {
            return Some(*failure);
        }
        self.failures.remove(key);
        None
    }

    /// The configs of a manifest digest, if kept (marks them used).
    pub fn by_digest(&mut self, digest: &str, now: Instant) -> Option<Platforms> {
        let (config, used) = self.configs.get_mut(digest)?;
        *used = now;
        Some(config.clone())
    }

    /// Records that `reference` points at `digest` now.
    pub fn saw_tag(&mut self, reference: &str, digest: &str, now: Instant) {
        if !self.tags.contains_key(reference) {
            evict_oldest(&mut self.tags, self.limits.capacity, |(_, at)| *at);
        }
        self.tags
            .insert(reference.to_string(), (digest.to_string(), now));
    }

    pub fn store(&mut self, digest: &str, config: Platforms, now: Instant) {
        if !self.configs.contains_key(digest) {
            evict_oldest(&mut self.configs, self.limits.capacity, |(_, at)| *at);
        }
        self.configs.insert(digest.to_string(), (config, now));
    }

    pub fn fail(&mut self, key: &str, failure: LookupFailure, now: Instant) {
        if !self.failures.contains_key(key) {
            evict_oldest(&mut self.failures, self.limits.capacity, |(_, at)| *at);
        }
        self.failures.insert(key.to_string(), (failure, now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.configs.len()
    }
}

/// Makes room for one more entry: drops the least recently used while the
/// map is at `capacity`.
fn evict_oldest<V>(map: &mut HashMap<String, V>, capacity: usize, at: impl Fn(&V) -> Instant) {
    while map.len() >= capacity.max(1) {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CacheLimits {
        CacheLimits {
            capacity: 2,
            tag_ttl: Duration::from_secs(60),
            failure_ttl: Duration::from_secs(10),
        }
    }

    fn config(name: &str) -> Platforms {
        Platforms::single(ImageConfig {
            entrypoint: vec![format!("/bin/{name}")],
            cmd: vec![],
        })
    }

    fn pinned(digest: &str, name: &str) -> Option<(String, Platforms)> {
        Some((digest.to_string(), config(name)))
    }

    #[test]
    fn a_tag_is_answered_from_its_digest_until_it_goes_stale() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(limits());
        assert_eq!(cache.get("r/app:1", None, t0), None);
        cache.store("sha256:a", config("app"), t0);
        cache.saw_tag("r/app:1", "sha256:a", t0);
        assert_eq!(cache.get("r/app:1", None, t0), pinned("sha256:a", "app"));
        let later = t0 + Duration::from_secs(61);
        assert_eq!(cache.get("r/app:1", None, later), None, "tag stale");
        assert_eq!(
            cache.by_digest("sha256:a", later),
            Some(config("app")),
            "the config stays, by digest"
        );
    }

    #[test]
    fn a_pinned_reference_never_expires() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(limits());
        cache.store("sha256:a", config("app"), t0);
        let much_later = t0 + Duration::from_secs(86_400);
        assert_eq!(
            cache.get("r/app@sha256:a", Some("sha256:a"), much_later),
            pinned("sha256:a", "app")
        );
    }

    #[test]
    fn failures_are_remembered_briefly() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(limits());
        cache.fail("r/app:1 as anonymous", LookupFailure::Unreachable, t0);
        assert_eq!(
            cache.recent_failure("r/app:1 as anonymous", t0 + Duration::from_secs(9)),
            Some(LookupFailure::Unreachable)
        );
        assert_eq!(cache.recent_failure("r/app:1 as alice", t0), None);
        assert_eq!(
            cache.recent_failure("r/app:1 as anonymous", t0 + Duration::from_secs(10)),
            None
        );
    }

    #[test]
    fn the_least_recently_used_config_goes_first_when_full() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut cache = LookupCache::new(limits());
        cache.store("sha256:a", config("a"), t0);
        cache.store("sha256:b", config("b"), t0 + s(1));
        cache.by_digest("sha256:a", t0 + s(2));
        cache.store("sha256:c", config("c"), t0 + s(3));
        assert_eq!(cache.len(), 2);
        assert!(
            cache.by_digest("sha256:b", t0 + s(4)).is_none(),
            "b was oldest"
        );
        assert!(cache.by_digest("sha256:a", t0 + s(4)).is_some());
        assert!(cache.by_digest("sha256:c", t0 + s(4)).is_some());
    }
}

//! Image references (`[registry/]repository[:tag][@digest]`) normalised the
//! way container runtimes do, and the registry / tag rules over them.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    pub registry: &'a str,
    /// Repository path; Docker Hub's official images keep their short name
    /// here (`nginx`) and are matched as `library/nginx` too.
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

const DOCKER_HUB: &str = "docker.io";

pub fn parse(image: &str) -> ImageRef<'_> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // A ':' after the last '/' starts the tag; one before it is a port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    ImageRef {
        registry,
        repository,
        tag,
        digest,
    }
}

impl ImageRef<'_> {
    /// Whether `allowed` (a registry host, or a `host/path/` prefix) covers
    /// this image.
    pub fn is_from(&self, allowed: &str) -> bool {
        let allowed = allowed.trim_end_matches('/');
        match allowed.split_once('/') {
            None => self.registry == allowed,
            Some((host, prefix)) => {
                let repo_matches =
                    |repo: &str| repo == prefix || repo.starts_with(&format!("{prefix}/"));
                self.registry == host
                    && (repo_matches(self.repository)
                        || (host == DOCKER_HUB
                            && !self.repository.contains('/')
                            && repo_matches(&format!("library/{}", self.repository))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_shapes() {
        assert_eq!(
            parse("nginx"),
            ImageRef {
                registry: "docker.io",
                repository: "nginx",
                tag: None,
                digest: None
            }
        );
        assert_eq!(parse("nginx:1.27").tag, Some("1.27"));
        let r = parse("localhost:5000/team/app:v2@sha256:abc");
        assert_eq!(
            (r.registry, r.repository, r.tag, r.digest),
            ("localhost:5000", "team/app", Some("v2"), Some("sha256:abc"))
        );
        let r = parse("registry.k8s.io/pause");
        assert_eq!(
            (r.registry, r.repository, r.tag),
            ("registry.k8s.io", "pause", None)
        );
        assert_eq!(parse("library/busybox:latest").registry, "docker.io");
    }

    #[test]
    fn registry_prefixes() {
        assert!(parse("registry.k8s.io/pause:3.9").is_from("registry.k8s.io"));
        assert!(!parse("registry.k8s.io.evil.com/pause:3.9").is_from("registry.k8s.io"));
        assert!(parse("ghcr.io/acme/api:1").is_from("ghcr.io/acme/"));
        assert!(!parse("ghcr.io/acmecorp/api:1").is_from("ghcr.io/acme"));
        assert!(parse("nginx:1").is_from("docker.io/library"));
        assert!(parse("nginx:1").is_from("docker.io"));
    }
}

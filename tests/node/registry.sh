# shellcheck shell=bash
# Sourced by tests/node/run.sh: a real OCI registry (CNCF Distribution,
# pinned, built from the Go module proxy like tests/e2e/build-binaries.sh
# builds the cluster) so the node pulls images over HTTP as in production.
# build_registry needs CACHE_DIR and the network (run it outside the suite's
# namespace); the rest needs WORK, start_bg/stop_bg/wait_for (tests/e2e/cluster.sh).

REGISTRY_VERSION="${REGISTRY_VERSION:-v3.1.2}"
REGISTRY_BIN="$CACHE_DIR/bin/registry-$REGISTRY_VERSION"

# A consumer module, as for helm: the registry's own go.mod pins the rest.
build_registry() {
  [[ -x "$REGISTRY_BIN" ]] && return 0
  local src="$CACHE_DIR/src/registry" pkg=github.com/distribution/distribution/v3
  rm -rf "$src" && mkdir -p "$src" "$CACHE_DIR/bin"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/registry"\n' "$pkg" >"$src/tools.go"
  (cd "$src" && go mod init palisade.dev/e2e/registry >/dev/null 2>&1 \
    && go get "$pkg@$REGISTRY_VERSION" && go mod tidy \
    && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" go build -trimpath \
      -ldflags="-s -w -X $pkg/version.version=$REGISTRY_VERSION" -o "$REGISTRY_BIN.tmp" "$pkg/cmd/registry")
  # Renamed only when complete: an interrupted build is not taken as cached.
  mv "$REGISTRY_BIN.tmp" "$REGISTRY_BIN"
}

# Answers on /v2/ with the given HTTP status (401: auth is on).
registry_answers() { # addr, status
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/v2/")" == "$2" ]]
}

start_registry() { # addr [htpasswd file]
  local addr="$1" htpasswd="${2:-}" config="$WORK/registry.yml"
  mkdir -p "$WORK/registry" "$WORK/logs"
  # A fixed secret: without one the registry warns at every start. Plain
  # HTTP: clients are told the registry is insecure, no certificates needed.
  cat >"$config" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: "$WORK/registry"}
http: {addr: "$addr", secret: palisade-e2e}
YAML
  # Basic auth needs no TLS here; bcrypt hashes only (make_htpasswd).
  [[ -z "$htpasswd" ]] || printf 'auth:\n  htpasswd: {realm: palisade-e2e, path: "%s"}\n' "$htpasswd" >>"$config"
  # No OpenTelemetry collector: the default OTLP exporter would log errors.
  start_bg registry env OTEL_TRACES_EXPORTER=none "$REGISTRY_BIN" serve "$config"
  wait_for "registry on $addr" 30 registry_answers "$addr" "$([[ -n "$htpasswd" ]] && echo 401 || echo 200)"
}

stop_registry() { stop_bg registry; }

# One bcrypt entry (the only hash the registry accepts), at the lowest cost:
# it is checked on every request. Python's crypt (Debian 12's python3) or
# apache2-utils' htpasswd.
make_htpasswd() { # user, password, file
  if command -v htpasswd >/dev/null; then
    htpasswd -nbB -C 4 "$1" "$2" | sed '/^$/d' >"$3"
  else
    /usr/bin/python3 -W ignore -c 'import crypt, sys
print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' "$1" "$2" >"$3"
  fi
}

# The archives images/build.sh writes hold one manifest, so no name is
# needed after the path; the digest stays the archive's.
push_image() { # archive, registry/name:tag, [user:password]
  local creds=()
  [[ -z "${3:-}" ]] || creds=(--dest-creds "$3")
  skopeo copy --quiet --preserve-digests --dest-tls-verify=false "${creds[@]}" \
    "oci-archive:$1" "docker://$2"
}

# The manifest digest a tag names now (Docker-Content-Digest of a HEAD).
registry_digest() { # registry/name:tag, user:password
  local host="${1%%/*}" rest="${1#*/}"
  curl -sfI -u "$2" \
    -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' \
    "http://$host/v2/${rest%:*}/manifests/${rest##*:}" \
    | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'
}

# A multi-platform image: an OCI index over manifests already pushed to the
# same repository, one `tag=arch` per Linux platform (the same manifest may
# stand for several).
push_index() { # registry/name:tag, user:password (or ""), tag=arch...
  local target="$1" host="${1%%/*}" rest="${1#*/}"
  local repo="${rest%:*}" entries="[]" spec manifest creds=()
  [[ -z "$2" ]] || creds=(-u "$2")
  shift 2
  manifest="$(mktemp)"
  for spec in "$@"; do
    curl -sf "${creds[@]}" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      -o "$manifest" "http://$host/v2/$repo/manifests/${spec%=*}"
    entries=$(jq -c --arg d "sha256:$(sha256sum "$manifest" | cut -d' ' -f1)" \
      --argjson size "$(stat -c %s "$manifest")" --arg arch "${spec#*=}" \
      '. + [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $size,
             platform: {os: "linux", architecture: $arch}}]' <<<"$entries")
  done
  rm -f "$manifest"
  jq -cn --argjson m "$entries" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}' \
    | curl -sf "${creds[@]}" -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' \
      --data-binary @- "http://$host/v2/$repo/manifests/${target##*:}" >/dev/null
}

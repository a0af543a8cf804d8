#!/usr/bin/env bash
# The last sections of bench/RESULTS.md: image sizes from the archives
# `make images` wrote, the enforcer's detection and exec-churn tables from
# the last `make bench-detection`, and the figures the last `make e2e-node`
# recorded. `bench/run.sh` includes them; with --update FILE they replace
# those sections of FILE in place (`make bench-images`), so sizes can be
# refreshed without a load run; with --update-detection FILE only the
# detection section is replaced (`make bench-detection`).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGES_DIR="${IMAGES_DIR:-$ROOT/target/images}"
NODE_RESULTS="${PALISADE_NODE_RESULTS:-$ROOT/target/node-results.txt}"
POD_RESULTS="${PALISADE_POD_RESULTS:-$ROOT/target/pod-results.txt}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT

# | image | archive KiB | compressed layers KiB | unpacked KiB |
image_row() {
  local archive="$1" d manifest layers packed=0 unpacked=0 l
  d="$W/$(basename "$archive")"; mkdir -p "$d"; tar -xf "$archive" -C "$d"
  manifest="$d/blobs/sha256/$(jq -r '.manifests[0].digest | sub("sha256:"; "")' "$d/index.json")"
  layers=$(jq -r '.layers[].digest | sub("sha256:"; "")' "$manifest")
  for l in $layers; do
    packed=$((packed + $(stat -c %s "$d/blobs/sha256/$l")))
    unpacked=$((unpacked + $(gzip -dc "$d/blobs/sha256/$l" | wc -c)))
  done
  printf '| `%s` | %s | %d | %d | %d |\n' \
    "$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$d/index.json")" \
    "$(jq -r '.manifests[0].digest' "$d/index.json" | cut -c1-19)" \
    $(($(stat -c %s "$archive") / 1024)) $((packed / 1024)) $((unpacked / 1024))
}

images_section() {
  echo "## Container images (\`make images\`)"
  echo
  local rows="" img a
  for img in palisade palisade-enforcer; do
    a="$IMAGES_DIR/$img-$VERSION.oci.tar"
    [[ -f "$a" ]] && rows+="$(image_row "$a")"$'\n'
  done
  if [[ -n "$rows" ]]; then
    echo "Measured $(date -u +%Y-%m-%d) from the archives in \`target/images\`."
    echo
    echo "| Image | digest | archive (KiB) | compressed layers (KiB) | unpacked (KiB) |"
    echo "| --- | --- | ---: | ---: | ---: |"
    printf '%s' "$rows"
    echo
    echo "Targets: enforcer image < 5 MiB, control plane < 20 MiB (compressed, as a registry stores and a node pulls them). The same binaries build the same digests."
  else
    echo "Not measured: run \`make images\` first."
  fi
  echo
}

detection_section() {
  echo "## Enforcer detection (\`make bench-detection\`: simulated pod, processes of a given lifetime run one after another)"
  echo
  if [[ -s "$POD_RESULTS" ]]; then
    echo "From the last passing run on this machine ($(date -u -r "$POD_RESULTS" +%Y-%m-%d)). Judged: the process was seen and checked against the policy; noticed: judged, or counted as having run unobserved (\`enforcer/unobserved-processes\`). Exec churn: the enforcer's own CPU time (utime + stime) while the app starts short-lived processes at a fixed rate, with N other processes in the pod; targets: at most 3 % at 20/s and 10 % at 100/s with 200 processes in the pod."
    echo
    sed 's/^\([^|].*\)$/- \1/' "$POD_RESULTS"
  else
    echo "Not measured: run \`make bench-detection\` (needs root)."
  fi
  echo
}

node_section() {
  echo "## In running Pods (\`make e2e-node\`, real kubelet + containerd)"
  echo
  if [[ -s "$NODE_RESULTS" ]]; then
    echo "From the last \`make e2e-node\` run on this machine ($(date -u -r "$NODE_RESULTS" +%Y-%m-%d)); times are from the start of \`kubectl exec\` (its setup included) to the event's time at the enforcer:"
    echo
    sed 's/^node: /- /' "$NODE_RESULTS"
  else
    echo "Not measured: run \`make e2e-node\` first (needs root)."
  fi
}

sections() {
  images_section
  detection_section
  node_section
}

if [[ "${1:-}" == --update-detection ]]; then
  file="$2"
  # The detection section runs from its heading to the next one.
  detection_section >"$W/detection.md"
  awk -v new="$W/detection.md" '
    /^## Enforcer detection/ { while ((getline line < new) > 0) print line; skip = 1; done = 1; next }
    skip && /^## / { skip = 0 }
    !skip { print }
    END { if (!done) exit 1 }' "$file" >"$W/results.md" ||
    { echo "no detection section in $file: run make bench-images first" >&2; exit 1; }
  mv "$W/results.md" "$file"
  echo "updated the detection section of $file"
elif [[ "${1:-}" == --update ]]; then
  file="$2"
  # These are the last sections of the file: keep what precedes them.
  { sed '/^## Container images/,$d' "$file"; sections; } >"$W/results.md"
  mv "$W/results.md" "$file"
  echo "updated the image and node sections of $file"
else
  sections
fi

#!/usr/bin/env bash
# Builds OCI image archives offline from static binaries: no base image,
# nothing pulled. umoci writes the layout (one layer, fixed timestamps, so the
# same inputs give the same digest), skopeo names it with its full reference
# (what `ctr images import` and `kind load` read), a `manifest.json` beside
# `index.json` lets Docker's classic image store load it too (the layout
# `docker save` writes since Docker 25), and the layout is archived with
# sorted entries and fixed metadata.
#
#   images/build.sh OUT_DIR NAME:TAG ENTRYPOINT [--cmd ARG]... [--label K=V]... \
#       [--user UID:GID] -- SRC=DEST...
#
# SRC=DEST copies a file or a directory tree into the image at DEST; a DEST
# ending in / keeps SRC's base name; SRC ending in /. copies a directory's
# contents (a prepared root: `rootfs/.=/`). Environment: SOURCE_DATE_EPOCH (default:
# the last commit's time) fixes every timestamp.
set -euo pipefail

die() { echo "images/build.sh: $*" >&2; exit 1; }
for tool in umoci skopeo tar jq; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install umoci skopeo tar jq)"
done

(($# >= 3)) || die "usage: OUT_DIR NAME:TAG ENTRYPOINT [--cmd ARG]... [--label K=V]... [--user U:G] -- SRC=DEST..."
out_dir="$1" ref="$2" entrypoint="$3"; shift 3
cmd=() labels=() user="65532:65532"
while (($#)); do
  case "$1" in
    --cmd) cmd+=("$2"); shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option $1" ;;
  esac
done
(($#)) || die "no content given (SRC=DEST after --)"

epoch="${SOURCE_DATE_EPOCH:-$(git -C "$(dirname "$0")" log -1 --format=%ct 2>/dev/null || echo 0)}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
tag="${ref##*:}"
name="${ref%:*}"
[[ "$tag" != "$ref" && -n "$tag" ]] || die "$ref has no tag"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The root filesystem: copied with fixed mtimes so the layer is reproducible.
rootfs="$work/rootfs"
mkdir -p "$rootfs"
for spec in "$@"; do
  src="${spec%%=*}" dest="${spec#*=}"
  [[ -e "$src" ]] || die "$src does not exist"
  [[ "$dest" == /* ]] || die "destination $dest must be absolute"
  if [[ "$src" == */. ]]; then
    mkdir -p "$rootfs$dest"
    cp -a --no-preserve=ownership "$src" "$rootfs$dest"
    continue
  fi
  [[ "$dest" == */ ]] && dest="$dest$(basename "$src")"
  mkdir -p "$rootfs$(dirname "$dest")"
  cp -a --no-preserve=ownership "$src" "$rootfs$dest"
done
# Nothing writable by others, but sticky directories (/tmp) stay as given.
find "$rootfs" ! -type l ! -perm -1000 -exec chmod go-w {} +
find "$rootfs" -exec touch -h -d "@$epoch" {} +

# Without root, umoci maps the caller to the image's root (files stay 0:0).
umoci_user=()
[[ $(id -u) -eq 0 ]] || umoci_user=(--rootless)

layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
# Unpack the empty image, fill its root, repack: one layer whose entries are
# relative paths (./bin/...), as every image tool writes them.
umoci unpack "${umoci_user[@]}" --image "$layout:$tag" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
find "$work/bundle/rootfs" -exec touch -h -d "@$epoch" {} +
umoci repack --image "$layout:$tag" --history.created "$created" \
  --history.created_by "palisade images/build.sh" "$work/bundle"
config_args=(--image "$layout:$tag" --created "$created" --history.created "$created"
  --history.created_by "palisade images/build.sh (config)"
  --config.user "$user" --config.entrypoint "$entrypoint" --clear config.env
  --config.env "PATH=/usr/local/bin:/usr/bin:/bin")
for c in "${cmd[@]}"; do config_args+=(--config.cmd "$c"); done
for l in "${labels[@]}"; do config_args+=(--config.label "$l" --manifest.annotation "$l"); done
umoci config "${config_args[@]}"
umoci gc --layout "$layout"

# Name the manifest with its full reference: container runtimes import the
# archive under that name.
named="$work/named"
skopeo copy --quiet "oci:$layout:$tag" "oci:$named:$name:$tag"
# containerd's own name annotation (kind and ctr prefer it) and Docker's
# index of the same blobs; both refer to what skopeo wrote, nothing new.
digest="$(jq -r '.manifests[0].digest' "$named/index.json")"
jq --arg ref "$name:$tag" '.manifests[0].annotations["io.containerd.image.name"] = $ref' \
  "$named/index.json" >"$work/index.json" && mv "$work/index.json" "$named/index.json"
manifest="$named/blobs/sha256/${digest#sha256:}"
jq --arg ref "$name:$tag" '[{
    Config: ("blobs/sha256/" + (.config.digest | sub("sha256:"; ""))),
    RepoTags: [$ref],
    Layers: [.layers[].digest | "blobs/sha256/" + sub("sha256:"; "")]
  }]' "$manifest" >"$named/manifest.json"

mkdir -p "$out_dir"
file="$out_dir/$(basename "$name")-$tag.oci.tar"
(cd "$named" && find . -exec touch -h -d "@$epoch" {} + \
  && tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
       --format=gnu \
       -cf "$work/image.tar" oci-layout index.json manifest.json blobs)
mv "$work/image.tar" "$file"
printf '%s\t%s\t%s\n' "$ref" "$digest" "$file"

#!/usr/bin/env bash
# PID 1 of the simulated pod (see run.sh): sets up the pod's network and
# the app container's root, then stands in for the pause container.
set -euo pipefail
W="$1"
APP_UID=1000

# --- the pod's network: loopback plus two non-loopback addresses for egress tests.
ip link set lo up
ip addr add 192.0.2.1/32 dev lo
ip addr add 192.0.2.2/32 dev lo

# --- the app container: overlayfs over the host root (the "image").
mkdir -p "$W"/{upper,ovwork,merged,state,data,policies}
# Part of the "image": a program only the detection tests run (a denied
# name), and /app, the app's own writable program directory.
mkdir -p "$W/upper/usr/local/bin" "$W/upper/app"
# (a trailing marker makes its content its own: it is not `sleep`)
cp /bin/sleep "$W/upper/usr/local/bin/napper"
printf 'napper' >>"$W/upper/usr/local/bin/napper"
cp /bin/sleep "$W/upper/app/worker"
# The app's own program that the learn, review, enforce section runs.
cp /bin/sleep "$W/upper/app/learned"
printf 'learned' >>"$W/upper/app/learned"
# Image programs five directories deep, in a program directory and
# outside any: in the image, so never drift (each its own content).
mkdir -p "$W/upper/app/vendor/a/b/c/bin" "$W/upper/srv/tools/x/y/z/bin"
cp /bin/sleep "$W/upper/app/vendor/a/b/c/bin/tool"
printf 'vendor-tool' >>"$W/upper/app/vendor/a/b/c/bin/tool"
cp /bin/sleep "$W/upper/srv/tools/x/y/z/bin/tool2"
printf 'srv-tool' >>"$W/upper/srv/tools/x/y/z/bin/tool2"
chown -R "$APP_UID:$APP_UID" "$W/upper/app"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/ovwork" "$W/merged"
mount --rbind /dev "$W/merged/dev"
mount -t proc proc "$W/merged/proc"
chown "$APP_UID:$APP_UID" "$W/state"

touch "$W/pod-ready"
exec sleep 100000

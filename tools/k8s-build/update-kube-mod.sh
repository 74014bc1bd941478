#!/usr/bin/env bash
# Regenerates kube/go.mod and kube/go.sum for another k8s.io/kubernetes release:
#   tools/k8s-build/update-kube-mod.sh v1.34.10
# k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...) at v0.0.0 and
# replaces them with ./staging paths, which do not apply to a consumer; so every module in its
# replace block gets `replace k8s.io/X => k8s.io/X v0.<minor>.<patch>` here, read from the
# downloaded .mod instead of typed by hand.
set -euo pipefail

kube_version="${1:?usage: $0 v1.34.x}"
staging_version="v0.${kube_version#v1.}"
module_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

upstream_mod="$(go mod download -json "k8s.io/kubernetes@$kube_version" |
  sed -nE 's/^\s*"GoMod": "(.*)",?$/\1/p')"
[[ -s "$upstream_mod" ]] || { echo "could not download k8s.io/kubernetes@$kube_version" >&2; exit 1; }

{
  echo "// Consumer module that pins the upstream Kubernetes control plane; regenerate with ../update-kube-mod.sh."
  echo "// Kept apart from every other module so minimal version selection cannot move Kubernetes' pins."
  echo "module order-pipeline/k8s-build/kube"
  echo
  grep -m1 -E '^go [0-9.]+$' "$upstream_mod"
  echo
  grep -m1 -E '^godebug ' "$upstream_mod"
  echo
  echo "require k8s.io/kubernetes $kube_version"
  echo
  echo "replace ("
  sed -n '/^replace (/,/^)/p' "$upstream_mod" | sed -nE 's/^\s*(k8s\.io\/[A-Za-z0-9._-]+) => .*/\1/p' |
    while read -r staging_module; do
      printf '\t%s => %s %s\n' "$staging_module" "$staging_module" "$staging_version"
    done
  echo ")"
} >"$module_dir/go.mod"
rm -f "$module_dir/go.sum"
(cd "$module_dir" && GOFLAGS=-mod=mod go mod tidy)
echo "updated $module_dir/go.mod for $kube_version (staging modules at $staging_version)"

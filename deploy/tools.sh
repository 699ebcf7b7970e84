#!/usr/bin/env bash
# Installs the offline validators that tests/deploy/ uses, only when they are missing:
#   kubectl     (renders the kustomize overlays)   Debian package kubernetes-client
#   promtool    (checks alert rules and PromQL)    Debian package prometheus
#   kubernetes-validate (Kubernetes JSON schemas)  PyPI, into the repository's .venv
# Idempotent: a second run changes nothing and touches no network.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MODELYARD_VENV:-$repo_root/.venv}"

missing_debs=()
command -v kubectl >/dev/null 2>&1 || missing_debs+=(kubernetes-client)
command -v promtool >/dev/null 2>&1 || missing_debs+=(prometheus)

if ((${#missing_debs[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        sudo_cmd=(sudo)
    else
        sudo_cmd=()
    fi
    echo "deploy/tools.sh: installing ${missing_debs[*]} with apt-get" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    # --no-install-recommends: only the binaries, the prometheus service is never started here.
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" \
        apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi

if [[ ! -x "$venv/bin/pip" ]]; then
    echo "deploy/tools.sh: no virtualenv at $venv (run 'make install' first)" >&2
    exit 1
fi
if ! "$venv/bin/python" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "deploy/tools.sh: installing kubernetes-validate into $venv" >&2
    "$venv/bin/pip" install -q 'kubernetes-validate>=1.30'
fi

kubectl version --client >/dev/null 2>&1 || { echo "deploy/tools.sh: kubectl does not run" >&2; exit 1; }
promtool --version >/dev/null 2>&1 || { echo "deploy/tools.sh: promtool does not run" >&2; exit 1; }

#!/usr/bin/env bash
# Idempotent set-up for this repository: system tools, a virtualenv, a running Docker engine and
# the base image. Safe to run again and again; each step checks before it acts.
#
#   scripts/setup.sh            what `pipeline run local` needs
#   scripts/setup.sh --tests    also the tools the test suite's validators need
#
# Needs root (or sudo) for apt-get, for starting dockerd and for debootstrap (the base image).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
WANT_TESTS=0
[[ "${1:-}" == "--tests" ]] && WANT_TESTS=1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# --- system packages (Debian/Ubuntu) ---------------------------------------------------------
need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v packer >/dev/null || need_pkgs+=(packer)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v git >/dev/null || need_pkgs+=(git)
if [[ $WANT_TESTS -eq 1 ]]; then
    command -v node >/dev/null || need_pkgs+=(nodejs npm)
    # the schema tests run a real PostgreSQL server on 127.0.0.1 (and read pg_dump's output)
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
    command -v redis-server >/dev/null || need_pkgs+=(redis-server)  # real Redis for the flag tests
fi
if ((${#need_pkgs[@]})); then
    say "installing ${need_pkgs[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- Python virtualenv with this package (editable) -------------------------------------------
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    say "creating $VENV and installing pipeline-as-code[dev]"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e ".[dev]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
fi

# --- Docker engine ------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd in the background (log: /tmp/pipeline-dockerd.log)"
    as_root sh -c 'nohup dockerd > /tmp/pipeline-dockerd.log 2>&1 & echo $! > /tmp/pipeline-dockerd.pid'
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /tmp/pipeline-dockerd.log" >&2; exit 1; }
fi

# --- base image (built from Debian's mirror with debootstrap) -------------------------------------
# --no-pull: the bundled reference service builds its base from Debian's mirror, and this machine
# reaches no registry (set-up and CI must never try Docker Hub; a team's agents pull and derive it).
"$VENV/bin/pipeline" image base --no-pull

# --- validators for the renderer tests -----------------------------------------------------------
if [[ $WANT_TESTS -eq 1 && -x .ci/install-validators.sh ]]; then
    say "installing CI-config validators"
    .ci/install-validators.sh
fi
if [[ $WANT_TESTS -eq 1 && -x .ci/install-ci-runners.sh ]]; then
    say "installing CI runners (act, gitlab-ci-local, action stand-ins)"
    PYTHON="$VENV/bin/python" .ci/install-ci-runners.sh
fi
say "set-up done"

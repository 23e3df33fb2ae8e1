#!/usr/bin/env bash
# Finds this machine's python X.Y for the requested version, then hands over to setup_python.py
# (run by that interpreter). Fails, naming the version, when the machine has no such Python:
# the real action would download one, and nothing may be downloaded here.
set -euo pipefail

version="${INPUT_PYTHON_VERSION:-}"
if [[ -z "$version" && -n "${INPUT_PYTHON_VERSION_FILE:-}" ]]; then
    version=$(grep -v '^\s*#' "$INPUT_PYTHON_VERSION_FILE" | head -1 | tr -d '[:space:]')
fi
if [[ -z "$version" ]]; then
    echo "::error::setup-python stand-in: give python-version (the real action would use the Python on PATH with a warning; the stand-in does not emulate that)"
    exit 1
fi
if [[ ! "$version" =~ ^([0-9]+)\.([0-9]+)(\.([0-9]+|x))?$ ]]; then
    echo "::error::setup-python stand-in: python-version '$version' is not X.Y, X.Y.Z or X.Y.x (ranges, PyPy and GraalPy are not emulated)"
    exit 1
fi
major_minor="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
python=""
for candidate in "python$major_minor" python3 python; do
    found=$(command -v "$candidate" || true)
    if [[ -n "$found" ]] && [[ "$("$found" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$major_minor" ]]; then
        python=$found
        break
    fi
done
if [[ -z "$python" ]]; then
    echo "::error::setup-python stand-in: Python $major_minor is not installed on this machine (python$major_minor is not on PATH); the stand-in never downloads one. Install it or render the workflow for a Python this runner has."
    exit 1
fi
exec "$python" "$GITHUB_ACTION_PATH/setup_python.py" "$version"

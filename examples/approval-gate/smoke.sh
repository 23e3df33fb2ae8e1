#!/bin/sh
# Example smoke test: pipeline runs it as a stage command (`./smoke.sh ENVIRONMENT`).
set -eu
echo "smoke-testing $1"

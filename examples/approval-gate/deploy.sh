#!/bin/sh
# Example deploy script: pipeline runs it as a stage command (`./deploy.sh ENVIRONMENT`).
set -eu
echo "deploying to $1"

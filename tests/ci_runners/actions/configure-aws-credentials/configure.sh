#!/usr/bin/env bash
# configure-aws-credentials@v4 stand-in. Region: checked like the real action's, exported as
# AWS_REGION and AWS_DEFAULT_REGION. Credentials, in the real action's order of precedence:
#   - aws-access-key-id (+ aws-secret-access-key, aws-session-token): exported as they are;
#   - role-to-assume alone: the real action exchanges the job's OIDC token for the role's temporary
#     credentials at AWS STS. Here the test plays STS: the credentials "STS would return" are the
#     runner's STAND_IN_STS_ACCESS_KEY_ID / STAND_IN_STS_SECRET_ACCESS_KEY (/ STAND_IN_STS_SESSION_TOKEN),
#     e.g. any keys a moto server accepts;
#   - neither (e.g. a secret that is not set, so the expression gave ''): credentials the runner
#     already has in its environment (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY) are used as they are;
#     without them, the real action's error.
# Every exported credential is masked in the log (::add-mask::), as the real action does.
set -euo pipefail

fail() { echo "::error::$*"; exit 1; }
mask() { [[ -n "$1" ]] && echo "::add-mask::$1"; return 0; }

region="${INPUT_AWS_REGION:-}"
[[ -n "$region" ]] || fail "Input required and not supplied: aws-region"
[[ "$region" =~ ^[a-z0-9-]+$ ]] || fail "Region is not valid: $region"

key="${INPUT_AWS_ACCESS_KEY_ID:-}" secret="${INPUT_AWS_SECRET_ACCESS_KEY:-}" token="${INPUT_AWS_SESSION_TOKEN:-}"
role="${INPUT_ROLE_TO_ASSUME:-}"
if [[ -n "$key" ]]; then
    [[ -n "$secret" ]] || fail "'aws-secret-access-key' must be provided if 'aws-access-key-id' is provided"
    [[ -z "$role" ]] || fail "configure-aws-credentials stand-in: role-to-assume with access keys (role chaining through STS) is not emulated"
    echo "Proceeding with IAM user credentials"
elif [[ -n "$role" ]]; then
    key="${STAND_IN_STS_ACCESS_KEY_ID:-}" secret="${STAND_IN_STS_SECRET_ACCESS_KEY:-}" token="${STAND_IN_STS_SESSION_TOKEN:-}"
    [[ -n "$key" && -n "$secret" ]] || fail "configure-aws-credentials stand-in: role-to-assume is set but the runner has no STAND_IN_STS_ACCESS_KEY_ID / STAND_IN_STS_SECRET_ACCESS_KEY (the credentials the stand-in's STS hands out; the test harness sets them)"
    echo "Authenticated as assumedRoleId ${role##*/}:${INPUT_ROLE_SESSION_NAME:-GitHubActions} (stand-in: no STS call)"
elif [[ -n "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
    key="$AWS_ACCESS_KEY_ID" secret="$AWS_SECRET_ACCESS_KEY" token="${AWS_SESSION_TOKEN:-}"
    echo "Proceeding with the credentials of the runner's environment"
else
    fail "Credentials could not be loaded, please check your action inputs: Could not load credentials from any providers"
fi
mask "$key"; mask "$secret"; mask "$token"

{
    echo "AWS_REGION=$region"
    echo "AWS_DEFAULT_REGION=$region"
    echo "AWS_ACCESS_KEY_ID=$key"
    echo "AWS_SECRET_ACCESS_KEY=$secret"
    echo "AWS_SESSION_TOKEN=$token"
} >> "$GITHUB_ENV"
if [[ "${INPUT_OUTPUT_CREDENTIALS:-false}" == "true" ]]; then
    {
        echo "aws-access-key-id=$key"
        echo "aws-secret-access-key=$secret"
        echo "aws-session-token=$token"
    } >> "$GITHUB_OUTPUT"
fi

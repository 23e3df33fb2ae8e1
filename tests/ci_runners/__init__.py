"""Real CI runners for the tests: nektos/act runs GitHub workflows (act.py), gitlab-ci-local runs
.gitlab-ci.yml files (gitlab.py), each on this machine in a git repository in a temporary folder.
`actions/` holds the local stand-ins act serves for the actions our workflows use (see its README).
Installed by .ci/install-ci-runners.sh."""

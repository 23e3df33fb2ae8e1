"""Secrets and branch filters.

Secrets are names: each CI target binds them from its own store (Jenkins credentials, TeamCity
password parameters or credentialsJSON tokens, GitHub secrets); no value is ever written to a CI
file. Branch filters keep publishing to `main` and `release/*`; a stage after a filtered stage is
skipped wherever that stage is.
"""

from pipeline import CommitTest, Environment, Pipeline, Secret, Shell, Trigger

registry_token = Secret(
    name="REGISTRY_TOKEN",
    jenkins="registry-token",
    teamcity="credentialsJSON:6f1c2a9e-0d3b-4c55-9a5e-3f2b1c7d8e90",
    github="REGISTRY_TOKEN",
)

with Pipeline(
    "secrets-and-branches",
    environments=[Environment(name="registry", secrets=("SIGNING_KEY",))],
    trigger=Trigger(branches=("main", "release/*")),
    # Quotes, `$` and `%` on purpose: every target must escape them its own way.
    install="pip install --index-url \"${PIP_INDEX_URL:-https://pypi.org/simple}\" 'pipeline-as-code[run]>=0.1'",
) as p:
    test = CommitTest(name="commit-test", commands=["python -m pytest -q"])
    build = Shell(name="build", commands=["python -m build"], env={"BUILD_FLAVOUR": "release", "COVERAGE_MIN": "90%"})
    publish = Shell(
        name="publish",
        environment="registry",
        branches=("main", "release/*"),
        secrets=[registry_token],
        commands=['twine upload --password "$REGISTRY_TOKEN" dist/*'],
    )
    announce = Shell(
        name="announce",
        branches=("main",),
        secrets=["CHAT_WEBHOOK"],
        commands=['curl -fsS -X POST "$CHAT_WEBHOOK" -d "released 100% of $PIPELINE_STAGE"'],
    )
    test >> build >> publish >> announce

"""An approval gate: deploy to staging, then a person approves production.

The gate belongs to the production environment, so every stage that deploys there waits for it:
Jenkins asks with `input`, TeamCity with its Build Approval feature, GitHub through the
`production` environment's required reviewers (set them with .github/approval-gate-environments.sh).
Deployments to one environment never run two at a time.
"""

from pipeline import Approval, CommitTest, Environment, Pipeline, Shell

with Pipeline(
    "approval-gate",
    environments=[
        Environment(name="staging"),
        Environment(
            name="production",
            approval=Approval(message="Deploy this build to production?", approvers=("alice", "bob"), groups=("ops",)),
        ),
    ],
) as p:
    test = CommitTest(name="commit-test", commands=["python -m pytest -q"])
    staging = Shell(name="deploy-staging", environment="staging", commands=["./deploy.sh staging"])
    smoke = Shell(name="smoke-staging", environment="staging", commands=["./smoke.sh staging"])
    production = Shell(name="deploy-production", environment="production", commands=["./deploy.sh production"])
    test >> staging >> smoke >> production

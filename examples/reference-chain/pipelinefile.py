"""The full reference chain on the local profile: bake, rehearse on a test stack, promote behind a gate.

It has the shape of the repository's own pipeline:

    commit-test -> bake -> test-stack -> update-stack -> rollback -> [teardown, always] -> promote

The test stack is an ephemeral copy of production; teardown deletes it even when a stage before
it failed, and promote (behind an approval gate) still runs only when everything before succeeded.
The Packer template, CloudFormation template and testinfra checks here are stubs.
"""

from pipeline import (
    Approval,
    Bake,
    CommitTest,
    Environment,
    Pipeline,
    Promote,
    SimulatedRollback,
    Teardown,
    TestStack,
    UpdateStack,
    Verify,
)

RELEASE = "1.0.0"
page = Verify(path="/", expect_text=f"Hello World {RELEASE}", requests=20)
healthy = Verify(path="/health", requests=10)

with Pipeline(
    "reference-chain",
    environments=[
        Environment(name="test", ephemeral=True),
        Environment(
            name="production",
            template="templates/web.yaml",
            # Who may approve: CI user names (Jenkins submitter, TeamCity user, GitHub reviewer).
            approval=Approval(message="Promote the new image to production?", approvers=("release-manager",)),
        ),
    ],
) as p:
    commit_test = CommitTest(name="commit-test", commands=["python -m pytest -q"], inputs=("templates", "images"))
    bake = Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec", variables={"version": RELEASE})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, verify=healthy)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)
    rollback = SimulatedRollback(name="rollback", stack=test_stack, verify=healthy)
    teardown = Teardown(name="teardown", stack=test_stack)
    promote = Promote(name="promote", environment="production", image=bake, verify=page)

    commit_test >> bake >> test_stack >> update >> rollback >> teardown >> promote

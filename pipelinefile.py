"""This repository's own pipeline: it tests the framework, then bakes, rehearses and promotes the
reference "Hello World" web service. `pipeline run local` runs all of it on this machine.

Change RELEASE (the page says "Hello World <RELEASE>"), run `pipeline run local`, and watch the new
page get baked, tested on an ephemeral stack, rolled back in rehearsal and promoted.
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
    "hello-web",
    environments=[
        Environment(name="test", ephemeral=True),
        Environment(
            name="production",
            template="templates/web.yaml",
            # Who may approve: CI user names (Jenkins submitter, TeamCity user, GitHub reviewer).
            approval=Approval(message="Promote the new image to production?", approvers=("release-manager",)),
        ),
    ],
    profile="aws",  # what CI uses; `pipeline run local` rehearses on Docker unless told --profile aws
    install="pip install -e '.[run]'",  # CI runs this checkout's own code, not a released version
    targets=("jenkins", "teamcity", "github"),  # `pipeline render` and every drift check cover these
) as p:
    commit_test = CommitTest(
        name="commit-test",
        commands=["ruff check .", "mypy", "pytest -q -p no:cacheprovider tests/unit --junitxml=.pipeline/unit.xml"],
        junit=".pipeline/unit.xml",
        inputs=("pipeline", "stages", "tests/unit", "pyproject.toml"),
    )
    bake = Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec", variables={"version": RELEASE})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, verify=healthy)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)
    rollback = SimulatedRollback(name="rollback", stack=test_stack, verify=healthy)
    teardown = Teardown(name="teardown", stack=test_stack)
    promote = Promote(name="promote", environment="production", image=bake, verify=page)

    commit_test >> bake >> test_stack >> update >> rollback >> teardown >> promote

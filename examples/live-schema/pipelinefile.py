"""Live schema changes: expand/contract migrations, rehearsed with every release.

The service (app/app.py) greets from PostgreSQL and counts its visits, so a schema change matters
to users. Its migrations (migrations/, Alembic) are split into an `expand` branch (only adds: the
release before keeps working) and a `contract` branch (drops and renames: only once no replica of
an older release runs). Every run:

    commit-test -> bake -> test-stack (a copy of production, its database seeded from a snapshot
      of production's, the sensitive column masked)
      -> expand-test -> update-stack -> contract-test
      -> rollback (the PREVIOUS image on this release's schema, verified: N-1 compatibility)
      -> teardown (always) -> expand -> promote (approval) -> contract (only when every replica
      runs this release)

Release 1.0.0 creates the tables; `python release.py 1.1.0` adds an expand (a new column the new
code reads), `python release.py 1.2.0` the contract that drops the old one. docs/schema.md.
"""

from pipeline import (
    Approval,
    Bake,
    CommitTest,
    Database,
    Environment,
    Migrate,
    Pipeline,
    Promote,
    Sensitive,
    SimulatedRollback,
    Teardown,
    TestStack,
    UpdateStack,
    Verify,
)

RELEASE = "1.0.0"
page = Verify(path="/", expect_text=f"from live-schema {RELEASE}", requests=20)
any_release = Verify(path="/", expect_text="from live-schema", requests=20)
healthy = Verify(path="/health", requests=5)

with Pipeline(
    "live-schema",
    environments=[
        Environment(name="test", ephemeral=True),
        Environment(
            name="production",
            template="templates/web.yaml",
            approval=Approval(message="Promote the new image to production?", approvers=("release-manager",)),
            database=Database(
                migrations="migrations",
                sensitive=[Sensitive(column="visits.agent", mask="'masked'")],
            ),
        ),
    ],
) as p:
    commit_test = CommitTest(
        name="commit-test",
        commands=["cfn-lint templates/web.yaml", "packer validate -syntax-only images/web.pkr.hcl"],
        inputs=("templates", "images"),
    )
    bake = Bake(
        name="bake",
        template="images/web.pkr.hcl",
        context=("images", "app"),
        checks="serverspec",
        variables={"version": RELEASE},
    )
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, verify=healthy)
    expand_test = Migrate(name="expand-test", stack=test_stack, phase="expand", image=bake)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)
    contract_test = Migrate(name="contract-test", stack=test_stack, phase="contract", image=bake)
    # The previous image on this release's schema: a release whose migrations break it stops here.
    rollback = SimulatedRollback(name="rollback", stack=test_stack, verify=any_release)
    teardown = Teardown(name="teardown", stack=test_stack)
    expand = Migrate(name="expand", environment="production", phase="expand", image=bake)
    promote = Promote(name="promote", environment="production", image=bake, verify=page, rollback_verify=any_release)
    contract = Migrate(name="contract", environment="production", phase="contract", image=bake)

    commit_test >> bake >> test_stack >> expand_test >> update >> contract_test >> rollback >> teardown
    teardown >> expand >> promote >> contract

"""Feature flags: the release of a feature is not a deploy.

The image ships /feature behind the flag `new-feature` (off by default). The chain bakes, rehearses
and promotes the image as usual, then releases the feature to production's users step by step
(10 %, 50 %, 100 %) by moving the flag in production's flag store (a Redis master and two
read-only replicas in the stack, from the template's ElastiCache replication group). Each step is
judged per variant through the balancer; a breach switches the flag off by itself.

Move it by hand, no deploy:

    pipeline flag set production new-feature on --percent 25
    pipeline flag list production

Production's balancer serves the alert route (POST /.pipeline/alert with the token in
FF_ALERT_TOKEN): a monitor's call sends every request to the stable version and switches a
rollout in flight off. A deploy of production needs FF_ALERT_TOKEN set (CI binds it as a secret).
"""

from pipeline import (
    Approval,
    Bake,
    Environment,
    Flag,
    FlagRollout,
    Health,
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
    "feature-flags",
    flags=[Flag(name="new-feature", default=False, description="the /feature page")],
    environments=[
        Environment(name="test", ephemeral=True),
        Environment(
            name="production",
            template="templates/web.yaml",
            approval=Approval(message="Change production?", approvers=("release-manager",)),
            flags={"new-feature": False},
            alert_secret="FF_ALERT_TOKEN",
        ),
    ],
) as p:
    bake = Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec", variables={"version": RELEASE})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, verify=healthy)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)
    rollback = SimulatedRollback(name="rollback", stack=test_stack, verify=healthy)
    teardown = Teardown(name="teardown", stack=test_stack)
    promote = Promote(name="promote", environment="production", image=bake, verify=page)
    release = FlagRollout(
        name="release-feature",
        environment="production",
        flag="new-feature",
        steps=(10, 50, 100),
        observe_seconds=3,
        path="/feature",
        health=Health(max_error_rate=0.05, min_p99_ms=200, requests_per_second=60),
    )

    bake >> test_stack >> update >> rollback >> teardown >> promote >> release

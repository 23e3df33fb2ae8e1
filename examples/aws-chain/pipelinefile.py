"""The reference chain on the aws profile: CloudFormation stacks in eu-west-1.

CI binds AWS credentials its own way, with no values in the files: Jenkins through an AWS
Credentials binding (credentials id `aws-ENV`), TeamCity through an AWS Connection (`AwsENV`),
GitHub through OIDC (`aws-actions/configure-aws-credentials`, role ARN in the AWS_ROLE_ARN secret).
Approvers are named, and the gate times out after the default day. Stubs as in reference-chain.
"""

from pipeline import (
    Approval,
    AwsSettings,
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

RELEASE = "2.0.0"
page = Verify(path="/", expect_text=f"Hello World {RELEASE}")
ireland = AwsSettings(region="eu-west-1")

with Pipeline(
    "aws-chain",
    environments=[
        Environment(name="test", ephemeral=True, profile="aws", aws=ireland),
        Environment(
            name="production",
            profile="aws",
            aws=ireland,
            template="templates/web.yaml",
            approval=Approval(message="Ship 2.0.0 to production?", approvers=("release-manager",), groups=("sre",)),
        ),
    ],
    profile="aws",  # the bake too: Packer builds an AMI
    python="3.12",
) as p:
    commit_test = CommitTest(name="commit-test", commands=["python -m pytest -q"])
    bake = Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec", variables={"version": RELEASE})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, timeout_minutes=30)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page, retries=1)
    rollback = SimulatedRollback(name="rollback", stack=test_stack)
    teardown = Teardown(name="teardown", stack=test_stack, timeout_minutes=45)
    promote = Promote(name="promote", environment="production", image=bake, verify=page, timeout_minutes=90)

    commit_test >> bake >> test_stack >> update >> rollback >> teardown >> promote

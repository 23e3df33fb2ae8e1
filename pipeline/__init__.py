"""pipeline: write a release pipeline once in Python; run it on a laptop, render it for any CI.

from pipeline import Pipeline, CommitTest, Bake

with Pipeline("hello-web") as p:
    CommitTest(name="commit-test", commands=["pytest -q"]) >> Bake(name="bake", template="images/web.pkr.hcl")
"""

# Order matters: the model first, because the stage kinds (package `stages`) build on it and
# the spec needs the stage kinds.
from pipeline.builder import Pipeline
from pipeline.model import AgentLabels, Approval, AwsSettings, Environment, Secret, Stage, Verify
from pipeline.spec import PipelineSpec, Trigger
from pipeline.strategy import BlueGreen, Canary, Cutover, Half, Health, Pilot, Rolling

# Submodules, not the `stages` package: this import may run while `stages/__init__` is half done.
from stages.bake import Bake
from stages.commit_test import CommitTest
from stages.promote import Promote
from stages.shell import Shell
from stages.simulated_rollback import SimulatedRollback
from stages.teardown import Teardown
from stages.test_stack import TestStack
from stages.update_stack import UpdateStack

__version__ = "0.1.0"

__all__ = [
    "AgentLabels",
    "Approval",
    "AwsSettings",
    "Bake",
    "BlueGreen",
    "Canary",
    "CommitTest",
    "Cutover",
    "Environment",
    "Half",
    "Health",
    "Pilot",
    "Pipeline",
    "PipelineSpec",
    "Promote",
    "Rolling",
    "Secret",
    "Shell",
    "SimulatedRollback",
    "Stage",
    "Teardown",
    "TestStack",
    "Trigger",
    "UpdateStack",
    "Verify",
    "__version__",
]

"""pipeline: write a release pipeline once in Python; run it on a laptop, render it for any CI.

from pipeline import Pipeline, CommitTest, Bake

with Pipeline("hello-web") as p:
    CommitTest(name="commit-test", commands=["pytest -q"]) >> Bake(name="bake", template="images/web.pkr.hcl")
"""

from pipeline.builder import Pipeline
from pipeline.model import Approval, AwsSettings, Environment, Secret, Stage, StageOutputs, Verify
from pipeline.spec import PipelineSpec, Trigger
from pipeline.stages import (
    Bake,
    CommitTest,
    Promote,
    Shell,
    SimulatedRollback,
    Teardown,
    TestStack,
    UpdateStack,
)
from pipeline.strategy import BlueGreen, Canary, Cutover, Half, Health, Pilot, Rolling

__version__ = "0.1.0"

__all__ = [
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
    "StageOutputs",
    "Teardown",
    "TestStack",
    "Trigger",
    "UpdateStack",
    "Verify",
    "__version__",
]

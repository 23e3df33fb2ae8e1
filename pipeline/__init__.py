"""pipeline: write a release pipeline once in Python; run it on a laptop, render it for any CI.

from pipeline import Pipeline, CommitTest, Bake

with Pipeline("hello-web") as p:
    CommitTest(name="commit-test", commands=["pytest -q"]) >> Bake(name="bake", template="images/web.pkr.hcl")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.builder import Pipeline
    from pipeline.flags.spec import Flag
    from pipeline.model import (
        AgentLabels,
        Approval,
        AwsSettings,
        Database,
        Definition,
        Environment,
        Secret,
        Sensitive,
        Stage,
        StageOutputs,
        Verify,
    )
    from pipeline.spec import PipelineSpec, Trigger
    from pipeline.stages import (
        Bake,
        CommitTest,
        FlagRollout,
        Migrate,
        Promote,
        Shell,
        SimulatedRollback,
        Teardown,
        TestStack,
        UpdateStack,
    )
    from pipeline.strategy import BlueGreen, Canary, Cutover, DarkLaunch, Group, Half, Health, Phased, Pilot, Rolling

# The public names, imported when first used (PEP 562): `pipeline --help` and the commands that
# need no definition do not pay for the models.
_EXPORTS: dict[str, str] = {
    "Pipeline": "pipeline.builder",
    "Flag": "pipeline.flags.spec",
    **dict.fromkeys(
        (
            "AgentLabels",
            "Approval",
            "AwsSettings",
            "Database",
            "Definition",
            "Environment",
            "Secret",
            "Sensitive",
            "Stage",
            "StageOutputs",
            "Verify",
        ),
        "pipeline.model",
    ),
    **dict.fromkeys(("PipelineSpec", "Trigger"), "pipeline.spec"),
    **dict.fromkeys(
        (
            "Bake",
            "CommitTest",
            "Migrate",
            "FlagRollout",
            "Promote",
            "Shell",
            "SimulatedRollback",
            "Teardown",
            "TestStack",
            "UpdateStack",
        ),
        "pipeline.stages",
    ),
    **dict.fromkeys(
        ("BlueGreen", "Canary", "Cutover", "DarkLaunch", "Group", "Half", "Health", "Phased", "Pilot", "Rolling"),
        "pipeline.strategy",
    ),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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
    "DarkLaunch",
    "Database",
    "Definition",
    "Environment",
    "Flag",
    "FlagRollout",
    "Group",
    "Half",
    "Health",
    "Migrate",
    "Phased",
    "Pilot",
    "Pipeline",
    "PipelineSpec",
    "Promote",
    "Rolling",
    "Secret",
    "Sensitive",
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

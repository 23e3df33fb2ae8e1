"""Built-in stage kinds, one module each (spec + executor). Also exported from `pipeline`."""

import pipeline  # noqa: F401  # initialise the framework first: the stage kinds build on its model
from stages.bake import Bake
from stages.commit_test import CommitTest
from stages.kinds import STAGE_KINDS, AnyStage
from stages.promote import Promote
from stages.shell import Shell
from stages.simulated_rollback import SimulatedRollback
from stages.teardown import Teardown
from stages.test_stack import TestStack
from stages.update_stack import UpdateStack

__all__ = [
    "STAGE_KINDS",
    "AnyStage",
    "Bake",
    "CommitTest",
    "Promote",
    "Shell",
    "SimulatedRollback",
    "Teardown",
    "TestStack",
    "UpdateStack",
]

"""The built-in stage kinds: plain, frozen data, one module each (`pipeline.stages.<kind>`).

A kind says what a stage is (its fields, its outputs, its rules) and names the executor that
carries it out (`pipeline.executors`), which is imported only when a run needs it. These sources
live in the repository's top-level `stages/` folder and ship as `pipeline.stages`. All of them are
also exported from `pipeline`.
"""

from pipeline.stages.bake import Bake
from pipeline.stages.commit_test import CommitTest
from pipeline.stages.flag_rollout import FlagRollout
from pipeline.stages.kinds import STAGE_KINDS
from pipeline.stages.migrate import Migrate
from pipeline.stages.promote import Promote
from pipeline.stages.shell import Shell
from pipeline.stages.simulated_rollback import SimulatedRollback
from pipeline.stages.teardown import Teardown
from pipeline.stages.test_stack import TestStack
from pipeline.stages.update_stack import UpdateStack

__all__ = [
    "STAGE_KINDS",
    "Bake",
    "CommitTest",
    "FlagRollout",
    "Migrate",
    "Promote",
    "Shell",
    "SimulatedRollback",
    "Teardown",
    "TestStack",
    "UpdateStack",
]

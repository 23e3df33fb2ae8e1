"""The built-in stage kinds, in the order docs and tables list them (the registry in
pipeline/kinds.py adds the kinds plugins register)."""

from __future__ import annotations

from pipeline.model import Stage
from pipeline.stages.bake import Bake
from pipeline.stages.commit_test import CommitTest
from pipeline.stages.flag_rollout import FlagRollout
from pipeline.stages.migrate import Migrate
from pipeline.stages.promote import Promote
from pipeline.stages.shell import Shell
from pipeline.stages.simulated_rollback import SimulatedRollback
from pipeline.stages.teardown import Teardown
from pipeline.stages.test_stack import TestStack
from pipeline.stages.update_stack import UpdateStack

STAGE_KINDS: tuple[type[Stage], ...] = (
    CommitTest,
    Shell,
    Bake,
    TestStack,
    UpdateStack,
    SimulatedRollback,
    Teardown,
    Promote,
    Migrate,
    FlagRollout,
)

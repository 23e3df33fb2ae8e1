"""The built-in stage kinds, as one discriminated union (imported module by module, so that
`pipeline` and `stages` can be imported in either order)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from stages.bake import Bake
from stages.commit_test import CommitTest
from stages.promote import Promote
from stages.shell import Shell
from stages.simulated_rollback import SimulatedRollback
from stages.teardown import Teardown
from stages.test_stack import TestStack
from stages.update_stack import UpdateStack

STAGE_KINDS = (CommitTest, Shell, Bake, TestStack, UpdateStack, SimulatedRollback, Teardown, Promote)

AnyStage = Annotated[
    CommitTest | Shell | Bake | TestStack | UpdateStack | SimulatedRollback | Teardown | Promote,
    Field(discriminator="kind"),
]

"""contract: drop greetings.text, which no release since 1.1.0 reads.

Runs only once every replica runs 1.2.0 (the Migrate stage checks the stack), and the rehearsal
rolls the test stack back to 1.1.0 on the contracted schema before production gets it.
"""

from alembic import op

revision = "c1_drop_text"
down_revision = None
branch_labels = ("contract",)
depends_on = ("e2_message",)


def upgrade() -> None:
    op.drop_column("greetings", "text")

"""expand: the greeting and the visits the page counts.

Release 1.0.0 reads greetings.text and adds a row to visits for every page view.
"""

import sqlalchemy as sa
from alembic import op

revision = "e1_tables"
down_revision = None
branch_labels = ("expand",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "greetings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "visits",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("agent", sa.Text),
    )
    op.execute("INSERT INTO greetings (id, text) VALUES (1, 'Hello World')")

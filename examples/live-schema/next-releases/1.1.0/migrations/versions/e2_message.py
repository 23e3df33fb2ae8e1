"""expand: greetings.message, the column release 1.1.0 reads instead of greetings.text.

Additive: release 1.0.0 keeps reading greetings.text, which stays until the contract of 1.2.0.
"""

import sqlalchemy as sa
from alembic import op

revision = "e2_message"
down_revision = "e1_tables"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("greetings", sa.Column("message", sa.Text, nullable=True))
    op.execute("UPDATE greetings SET message = text WHERE message IS NULL")

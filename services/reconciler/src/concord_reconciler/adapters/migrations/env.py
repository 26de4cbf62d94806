from concord_reconciler.adapters.tables import metadata
from concord_store import alembic_env

alembic_env.run(metadata)

from concord_reconciler.kernel.schema import metadata
from concord_store import alembic_env

alembic_env.run(metadata)

from concord_mail_connector.adapters.tables import metadata
from concord_store import alembic_env

alembic_env.run(metadata)

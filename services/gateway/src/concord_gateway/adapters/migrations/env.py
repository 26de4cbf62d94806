from concord_store import alembic_env

alembic_env.run(None)

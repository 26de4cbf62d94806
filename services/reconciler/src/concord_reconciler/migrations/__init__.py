"""Alembic migrations of the reconciler's tables (run by concord_store.migrate)."""

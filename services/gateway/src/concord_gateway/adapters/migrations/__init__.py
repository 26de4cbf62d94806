"""The gateway's Alembic migrations: none yet, the gateway holds no state.

The package exists because every service runs `migrate` the same way (concord_runtime, the
Kubernetes migration Job); the gateway's first table will start its history here.
"""

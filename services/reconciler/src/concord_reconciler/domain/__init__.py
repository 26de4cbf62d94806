"""The reconciler's logic: mailboxes, sessions and their life cycle, the session runner.

Imports no gRPC, NATS or SQL: the outside world comes in through the ports (`ports`).
"""

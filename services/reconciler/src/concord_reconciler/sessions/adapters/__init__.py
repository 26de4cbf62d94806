"""Sessions over SQL and NATS: the store, the queue and consumer, the scheduler, the engine."""

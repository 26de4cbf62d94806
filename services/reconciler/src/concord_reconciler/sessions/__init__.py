"""Sessions: requests (coalesced, idempotent), the queue, the scheduler, leases, the runner."""

"""The mirror's vocabulary, planner and executor. No I/O: the world comes in through `ports`."""

"""The life of a session, its schedule and its run. No I/O: the world comes in through `ports`."""

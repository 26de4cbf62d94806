"""Mailboxes and settings: records, states, defaults and masked updates. No I/O."""

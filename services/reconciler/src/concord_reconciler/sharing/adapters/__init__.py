"""Sharing against the world: claim the key, link, write, remember."""

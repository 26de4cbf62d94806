"""Concord mail-connector service."""

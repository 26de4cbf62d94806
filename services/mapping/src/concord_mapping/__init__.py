"""Concord mapping service."""

"""Concord reconciler service."""

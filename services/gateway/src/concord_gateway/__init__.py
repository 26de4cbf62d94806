"""Concord gateway service."""

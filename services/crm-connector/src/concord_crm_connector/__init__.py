"""Concord crm-connector service."""

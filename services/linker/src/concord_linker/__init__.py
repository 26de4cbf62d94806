"""Concord linker service."""

"""Mailboxes, their settings and an org's health: the records sessions run for."""

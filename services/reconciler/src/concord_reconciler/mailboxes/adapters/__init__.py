"""Mailboxes and settings in SQL; an org's health figures."""

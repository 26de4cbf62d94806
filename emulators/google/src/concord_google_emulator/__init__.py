"""A local Google Workspace emulator: the unmodified google-api-python-client talks to it."""

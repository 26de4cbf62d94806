"""A Microsoft Graph emulator: the `/v1.0` surface the Graph mail provider uses (issue #13)."""

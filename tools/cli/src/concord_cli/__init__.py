"""The `concord` command-line tool: talks to the gateway, reads `make up`'s var/up.json."""

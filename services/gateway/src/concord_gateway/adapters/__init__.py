"""The gateway's outside world: its peers and the development key file."""

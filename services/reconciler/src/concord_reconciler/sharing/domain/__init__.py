"""Which emails are shared, under which key, as what. No I/O."""

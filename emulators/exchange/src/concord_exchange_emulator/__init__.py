"""An EWS emulator."""

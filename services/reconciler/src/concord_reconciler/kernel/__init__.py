"""What every room of the reconciler shares: errors, resource names, the clock, counts, the
SQL schema and its conventions. Imports no other room."""

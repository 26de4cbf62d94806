"""The gateway's logic: who the caller is and what they may do. No gRPC calls, no I/O."""

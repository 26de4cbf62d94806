"""The reconciler's gRPC API: validate, translate, call the domain."""

"""The mirror's sides over the peers' gRPC APIs, in memory, and the link store on SQL."""

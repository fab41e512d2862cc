"""``tdev console``: a read-only web console over the mesh's gRPC APIs, with live updates from its Watch streams."""

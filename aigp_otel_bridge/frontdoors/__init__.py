"""The ways data enters the bridge: in-process front doors and the context they propagate."""

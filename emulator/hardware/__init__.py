"""The pump's physical parts: drive mechanism, reservoir, fluid path, battery."""

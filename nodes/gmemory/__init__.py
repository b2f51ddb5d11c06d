"""G-Memory: hierarchical memory for multi-agent teams: insights, queries and interactions (``gmemory.*``)."""

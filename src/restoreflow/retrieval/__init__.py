"""restoreflow.retrieval."""

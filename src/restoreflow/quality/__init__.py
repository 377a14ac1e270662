"""restoreflow.quality."""

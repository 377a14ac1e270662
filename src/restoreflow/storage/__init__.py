"""restoreflow.storage."""

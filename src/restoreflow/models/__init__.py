"""restoreflow.models."""

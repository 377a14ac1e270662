"""restoreflow.flows."""

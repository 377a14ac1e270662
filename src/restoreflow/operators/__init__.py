"""restoreflow.operators."""

"""restoreflow.report."""

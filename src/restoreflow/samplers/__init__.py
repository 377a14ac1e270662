"""restoreflow.samplers."""

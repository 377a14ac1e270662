"""restoreflow.tasks."""

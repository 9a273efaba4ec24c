"""koji-rekor monitor: watch the log for entries made with our keys."""

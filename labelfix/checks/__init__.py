"""Checks: the per-file scan, the one bad-value rule and its message, lossy artifacts, dataset
statistics and validation."""

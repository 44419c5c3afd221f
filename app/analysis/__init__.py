"""Analysis views (extrapolation, results tables)."""

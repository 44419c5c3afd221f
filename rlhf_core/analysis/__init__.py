"""Analysis: reward extrapolation, correlation, agreement (no Qt)."""

"""Environments: making them headless, rolling them out, storing trajectories and clips (no Qt)."""

"""Reward learning: Bradley-Terry preference losses and reward networks (no Qt)."""

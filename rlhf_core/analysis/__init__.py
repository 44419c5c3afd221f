"""Analyses of data and models (no Qt): reward extrapolation, agreement, length bias, text
evaluation, the RL monitor. Jobs log them as evidence, so they depend on models, never on a trainer."""

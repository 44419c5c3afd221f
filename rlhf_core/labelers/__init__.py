"""Labellers that are not people: simulated teachers (B-Pref) and, later, AI feedback."""

"""Labellers: simulated teachers (B-Pref), and the sessions of people labelling in the app (``session``)."""

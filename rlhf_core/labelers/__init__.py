"""Labellers: simulated B-Pref teachers and the queue labeller job, AI feedback, text labels and
corrections, and the Qt-free sessions of a person labelling in the app (``session``)."""

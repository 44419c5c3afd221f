"""Labelling views: clip pairs, rankings, keyboard demonstrations."""

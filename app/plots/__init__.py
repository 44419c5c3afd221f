"""Live metric plots (pyqtgraph)."""

"""Trainers, one file per algorithm (``<Algo>Config`` + ``train_<algo>(config, ctx)``): ``control/`` and ``text/``."""

"""``python -m rlhf_core``: the headless command line (see cli.py)."""

from rlhf_core.cli import main

raise SystemExit(main())

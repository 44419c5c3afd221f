"""RLHF Workbench core: everything a researcher could script, with no Qt anywhere.

Importing this package sets the offline defaults (no hub look-ups, no telemetry) unless the user
has set those variables already; see :mod:`rlhf_core.runtime`.
"""

from rlhf_core.runtime import apply_offline_defaults as _apply_offline_defaults

__version__ = "0.1.0"

_apply_offline_defaults()

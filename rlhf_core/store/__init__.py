"""The project store: one folder, one SQLite database (see ``project.py`` and ``migrations.py``)."""

from rlhf_core.store.errors import CorruptProjectError, NewerSchemaError, NotAProjectError, ProjectError
from rlhf_core.store.migrations import SCHEMA_VERSION
from rlhf_core.store.project import (
    OUTCOMES,
    PROJECT_SUFFIX,
    RUN_STATUSES,
    SOURCES,
    Project,
    copy_project,
    open_project,
    utc_now,
)
from rlhf_core.store.ranking import expand_ranking

__all__ = [
    "CorruptProjectError", "NewerSchemaError", "NotAProjectError", "ProjectError", "SCHEMA_VERSION",
    "OUTCOMES", "PROJECT_SUFFIX", "RUN_STATUSES", "SOURCES", "Project", "copy_project",
    "open_project", "utc_now", "expand_ranking",
]

"""The project store: one folder, one SQLite database (see ``project.py`` and ``migrations.py``)."""

from rlhf_core.store.errors import (
    INTERRUPTED_ERROR,
    CorruptProjectError,
    DiskFullError,
    Failure,
    NewerSchemaError,
    NotAProjectError,
    ProjectBusyError,
    ProjectError,
    ReadOnlyProjectError,
    describe_failure,
    describe_stored_error,
    friendly_db_error,
)
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
    "CorruptProjectError", "DiskFullError", "NewerSchemaError", "ProjectBusyError", "ReadOnlyProjectError",
    "friendly_db_error", "Failure", "describe_failure", "describe_stored_error", "INTERRUPTED_ERROR",
    "NotAProjectError", "ProjectError", "SCHEMA_VERSION",
    "OUTCOMES", "PROJECT_SUFFIX", "RUN_STATUSES", "SOURCES", "Project", "copy_project",
    "open_project", "utc_now", "expand_ranking",
]

"""Errors raised when a project cannot be opened or written; each message is meant for a person."""


class ProjectError(Exception):
    """A project could not be created, opened or changed. ``str(error)`` is a complete message."""


class NotAProjectError(ProjectError):
    """The path exists but is not a workbench project."""


class CorruptProjectError(ProjectError):
    """The project's database is damaged or is not an SQLite database at all."""


class NewerSchemaError(ProjectError):
    """The project was written by a newer version of the workbench than this one."""

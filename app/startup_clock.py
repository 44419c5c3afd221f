"""The start-up clock: how long this process has run and how much CPU it has used, for the
``--startup-time`` and ``--smoke-test`` reports."""

from __future__ import annotations

import os


def process_age_seconds() -> float | None:
    """Seconds since this process was created (Linux: /proc, 10 ms resolution); None elsewhere.

    Unlike a clock started in Python, this includes the interpreter's (or the frozen app's
    bootloader's) own start-up.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            stat = fh.read()
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: starttime
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def cpu_seconds() -> float | None:
    """CPU time (user + system, all threads) this process has used: a start-up cost that, unlike the
    wall clock, does not grow when other programs share the CPU."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return round(usage.ru_utime + usage.ru_stime, 2)
    except (ImportError, OSError):
        return None


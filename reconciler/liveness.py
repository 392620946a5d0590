"""Is the poststack process a lock row names still running? Only its own host can tell.

The lock row names its holder as ``host:pid``. A backend whose client was killed keeps
running its current statement until it next writes to that client, so the backend being
alive does not mean the run is: on the holder's host, the process answers that. Elsewhere
the answer is unknown and the backend is all there is to go on.

On the ground floor: observing the lock asks it (tracking.read_lock), and so does replay
about the scratch databases of runs that may have died; checks never do I/O.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

# A pid is taken to be the lock's holder only if it started before the lock was taken. The
# two ages come from two clocks (the server's wall clock, this host's boot clock), and a
# step of the server's clock must not make a live run look gone: calling a live run dead
# is the costly mistake, so the leeway is generous. A pid reused that soon is rare.
START_LEEWAY_S = 30.0


def local_pid(locked_by: str | None) -> int | None:
    """The pid in ``host:pid`` when host is this machine, else None."""
    if not locked_by:
        return None
    host, _, pid = locked_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return int(pid)


def process_alive(pid: int, lock_age_s: float | None) -> bool | None:
    """Whether ``pid`` is still the process that took a lock ``lock_age_s`` seconds ago.

    False only on firm evidence: no such process, a zombie, or one that started after the
    lock was taken (the pid was reused). None when it cannot be told."""
    if pid <= 0:
        return None  # 0 and negative pids mean process groups to kill()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return None
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (macOS, BSD): existence is all there is
    state, age_s = stat
    if state in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    # A process younger than the lock took over the pid after the holder was gone.
    reused = lock_age_s is not None and age_s is not None and 0 <= age_s < lock_age_s - START_LEEWAY_S
    return not reused


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """(state letter, seconds since the process started) from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # With /proc mounted, a missing entry means the process ended since kill() found it.
        return ("X", None) if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        state, start_ticks = fields[0], int(fields[19])
        # Both counted from boot, so this clock and the start time agree (wall time may jump).
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        return state, now - start_ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError, AttributeError):
        return (fields[0], None) if fields else None

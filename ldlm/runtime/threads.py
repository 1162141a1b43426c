"""torch's CPU threads: a default that holds up on a machine busy with other work.

torch starts one OpenMP thread per core. When other processes hold those cores, its threads wait on
each other at every operation and small models slow down many times over (issue 26: generate took
37.5 s on the default threads against 1.8 s on one). The default here is torch's count (or
OMP_NUM_THREADS when set: the user's choice) cut to the cores that are free now, at least one; a core
running niced work counts as free for a process at nice 0 (the scheduler gives it way).

    threads = 0 / None   the default above
    threads = N          exactly N
"""
from __future__ import annotations

import functools
import os
import time

IDLE_WINDOW_S = 0.2  # how long the cores are watched; /proc/stat counts in 10 ms ticks


def _cpu_times(cpus: set[int], yielding: bool) -> tuple[int, int]:
    """(free, total) ticks of `cpus` since boot, from /proc/stat: free = idle + iowait, and with `yielding`
    the time of niced processes too (they give way to a process at nice 0)."""
    free = total = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                user, nice, system, idle, iowait, *rest = (int(f) for f in fields[:8])
                free += idle + iowait + (nice if yielding else 0)
                total += user + nice + system + idle + iowait + sum(rest)
    return free, total


def idle_cores(window: float = IDLE_WINDOW_S) -> float | None:
    """How many of this process's cores were free for it over the next `window` seconds: idle, or busy
    with niced work when this process is not niced itself; None where the system does not say (no
    /proc/stat)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    yielding = os.getpriority(os.PRIO_PROCESS, 0) <= 0
    try:
        idle0, total0 = _cpu_times(cpus, yielding)
        time.sleep(window)
        idle1, total1 = _cpu_times(cpus, yielding)
    except OSError:
        return None
    if total1 <= total0:
        return None
    return len(cpus) * (idle1 - idle0) / (total1 - total0)


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else torch's own count cut to the idle cores (at least 1)."""
    pinned = os.environ.get("OMP_NUM_THREADS", "")
    if pinned.isdigit() and int(pinned) > 0:
        return int(pinned)
    free, cores = idle_cores(), torch_threads()
    return cores if free is None else max(1, min(cores, round(free)))


@functools.cache
def torch_threads() -> int:
    """torch's own count (one per physical core), as it was before this module set any."""
    import torch

    return torch.get_num_threads()


def check_threads(threads, name: str = "threads=") -> None:
    """A thread count: an int >= 0 (0 / None = the default); ConfigError names `name` and the value."""
    from ..config import ConfigError

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ConfigError(f"{name}{threads!r}: give a thread count >= 1, or 0 for the default (the cores idle now)")


def use_threads(threads: int | None = 0, children: bool = False) -> int:
    """Set torch's CPU threads to `threads` (0 / None: `default_threads()`); returns the count.
    children: a count given also pins the processes this one starts (the notebooks' training runs)."""
    import torch

    check_threads(threads)
    torch_threads()  # remembered before it is changed
    count = threads or default_threads()
    torch.set_num_threads(count)
    if children and threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(count)
    return count

"""torch's threads fitted, for the length of a run, to the cores other processes leave free.

xband lets torch's OpenMP threads spin a moment before they sleep (`xband.imports`): the wait
between two layers of a pass is short, and waking a sleeping thread takes about as long as a
small layer. That is fastest on a machine the run has to itself, and slow where other processes
keep the cores busy: a pass then waits at every layer for a thread the system has put aside.
So a run first counts the other threads ready to run; where they leave fewer cores free than
torch has threads, torch runs with the free cores (at least one) until the run ends, and the
run's notes say so.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_lock = threading.Lock()
_depth = 0


def others_running(samples: int = 5) -> int | None:
    """Threads of other processes ready to run now: the fewest over `samples` readings a
    millisecond apart of /proc/loadavg's running count less this process's running threads
    (its own pool's threads may still be finishing the last run's spin); None where the system
    does not say (not Linux)."""
    counts = []
    try:
        for _ in range(samples):
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            counts.append(running - _own_running())
            time.sleep(0.001)
    except (OSError, ValueError, IndexError):
        return None
    return max(0, min(counts))


def _own_running() -> int:
    """This process's threads in the running state (this one among them)."""
    running = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        running += stat[stat.rindex(")") + 2] == "R"
    return max(running, 1)


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fitted_threads(threads: int, cores: int, others: int | None) -> int:
    """torch threads for a run: `threads`, or the cores the `others` leave free (at least one)."""
    return threads if others is None else max(1, min(threads, cores - others))


@contextmanager
def threads_for_the_load() -> Iterator[str | None]:
    """Within the block, torch uses at most the cores other processes leave free; yields the
    note to report when that is fewer threads than torch had (None otherwise). Nested and
    concurrent uses share the outermost one's setting."""
    global _depth
    with _lock:
        _depth += 1
        outermost = _depth == 1
        before = torch.get_num_threads()
        others = others_running() if outermost else None
        threads = fitted_threads(before, usable_cores(), others)
        if threads != before:
            torch.set_num_threads(threads)
    try:
        yield (f"speed: {threads} torch thread{'s' * (threads > 1)} instead of {before}: other "
               f"processes kept {others} of the {usable_cores()} cores busy when the run began"
               if threads != before else None)
    finally:
        with _lock:
            _depth -= 1
            if threads != before:
                torch.set_num_threads(before)

"""Threads that run torch on one intra-op thread each, while every other thread keeps the process's count.

`start_single_threaded([f, g])` starts one thread per callable. Background work split this way (the app's
warm-up, a robustness sweep's workers) uses every core when the machine is idle, and keeps going on the
free cores when a nice-0 thread (a page, the browser) takes one: a torch call on a team of several
threads waits at every parallel region for its slowest member, so one busy core stalls the whole team,
and at a lower priority (nice +10) that member gets about a tenth of its core.

torch's thread count is an OpenMP setting of each thread (omp_set_num_threads), which torch gives a thread
from a process-wide value when that thread first runs torch. Each new thread takes the process value
(torch's lazy initialisation) and sets one thread for itself; a short-lived thread then puts the process
value back for threads started later (tests/test_run_app.py and tests/test_limitations.py check it).
"""
from __future__ import annotations

import os
import threading

import torch


def lower_priority(nice: int, idle: bool = False) -> None:
    """Lower the calling thread's CPU priority by `nice` (Linux: nice is per thread; threads it starts,
    such as torch's intra-op pool, inherit it). With `idle`, also put it in Linux's SCHED_IDLE class: it
    then runs only on a core no other (normal) thread wants, so a page computing its own first result, or
    the browser drawing one, never shares a core with it; nice +10 still left it about a tenth of a busy
    core. Threads it starts inherit the class. Elsewhere (or where refused) a no-op."""
    tid = threading.get_native_id()
    if nice > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except (AttributeError, OSError):
            pass
    if idle:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            pass


def process_threads() -> int:
    """The process's torch thread count: what a thread that starts now gets (the calling thread's own
    count may differ, e.g. in a single-threaded worker)."""
    out = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


def _set_process_threads(n: int) -> None:
    # From a short-lived thread of its own, so that the caller's own count is left as it is.
    t = threading.Thread(target=torch.set_num_threads, args=(n,))
    t.start()
    t.join()


# Held while start_single_threaded reads the process value, starts its threads and puts the value back.
_STARTING = threading.Lock()


def start_single_threaded(targets: list, nice: int = 0, name: str = "worker", idle: bool = False
                          ) -> list[threading.Thread]:
    """Start one daemon thread per callable in `targets`, each running torch on one intra-op thread (and
    at nice +`nice`, in SCHED_IDLE with `idle`: `lower_priority`); returns the started threads (join them). The calling thread, threads that exist
    already and threads started later keep their torch thread count (a thread started in the instant
    between a worker's setting and its reset would get 1). Calls from several threads at once take turns
    (`_STARTING`): otherwise one call could read the instant's 1 as the process value and put back 1 for good."""
    with _STARTING:
        n = process_threads()
        threads = []
        for k, target in enumerate(targets):
            ready = threading.Event()

            def run(target=target, ready=ready):
                lower_priority(nice, idle)
                torch.get_num_threads()         # this thread takes the process value first (torch's lazy init) ...
                torch.set_num_threads(1)        # ... then one thread for itself (and, for an instant, the process)
                ready.set()
                target()
            t = threading.Thread(target=run, name=f"{name} {k}", daemon=True)
            t.start()
            ready.wait()
            _set_process_threads(n)             # the process value back; the new thread keeps its 1
            threads.append(t)
    return threads


def map_in_lanes(work, units, lanes: int, name: str = "lane"):
    """Yield work(unit) for each of `units`, in their order, computed by `lanes` threads that each run torch on
    one intra-op thread (`start_single_threaded`; they keep the caller's nice and scheduling class) and take the
    next unit whenever they finish one, so no lane idles while units are left.

    Why: on a CPU a torch call on a team of threads waits at every parallel region for its slowest member,
    and a decoding thread beside such a team preempts one member and stalls the other. Lanes that each decode
    and then run their own unit on one thread keep every core busy: while one lane holds the interpreter lock
    in Python (file reads, header checks), the other's forward runs without it (core.inference.evaluate; measured by
    benchmarks/bench_inference.py). An exception in `work` is raised here, at its unit's turn; the lanes stop
    taking units when the consumer stops (or fails) and are joined before this returns."""
    units = list(units)
    results: dict[int, tuple] = {}
    cond = threading.Condition()
    taken = [0]
    stop = [False]

    def lane():
        while True:
            with cond:
                if stop[0] or taken[0] >= len(units):
                    return
                k = taken[0]
                taken[0] += 1
            try:
                out = (work(units[k]), None)
            except BaseException as e:          # forwarded to the consumer at unit k's turn
                out = (None, e)
            with cond:
                results[k] = out
                if out[1] is not None:
                    stop[0] = True
                cond.notify_all()

    threads = start_single_threaded([lane] * max(1, min(lanes, len(units))), name=name) if units else []
    try:
        for k in range(len(units)):
            with cond:
                while k not in results:
                    if not any(t.is_alive() for t in threads) and k not in results:
                        raise RuntimeError(f"{name}s ended before unit {k} was done")
                    cond.wait(0.5)
                value, err = results.pop(k)
            if err is not None:
                raise err
            yield value
    finally:
        with cond:
            stop[0] = True
        for t in threads:
            if t is not threading.current_thread():     # a collection of this generator that ran on a lane
                t.join()


AUTOGROUP = "/proc/self/autogroup"


def own_background_group(nice: int = 19) -> bool:
    """Move the calling process (all its threads, and the processes it starts later) into a session of its own,
    and so into its own scheduler autogroup, and give that group autogroup nice +`nice`; True if both were done.

    Why: with Linux's autogroup scheduling (kernel.sched_autogroup_enabled, on by default in most desktop and
    server kernels, on here), the CPU is shared first between sessions, then between the threads inside each,
    and nice values and SCHED_IDLE count only inside a session. A browser is started in a session of its own
    (Playwright launches Chromium with setsid; a desktop starts every application in its own), so a thread in
    SCHED_IDLE at nice +19 in the server's session still took as much CPU as all of the browser's threads
    together while the browser drew a page: the server's group, with only that thread runnable, weighs as much
    as the browser's. A group of its own at nice +19 weighs 15 against a nice-0 group's 1024: about 1.5% of a
    core the browser wants (`python benchmarks/autogroup_share.py`: a SCHED_IDLE spinner beside a busy process
    of another session got 50.0% of their core, 1.5% in a group of its own at nice +19). Elsewhere (no setsid,
    no autogroup file, or refused) nothing changes and False is returned; the threads' own nice and
    SCHED_IDLE (`lower_priority`) still apply inside whatever group they are in."""
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()                     # refused for a process group leader: then its own group is kept
    except (AttributeError, OSError):
        return False
    return set_group_nice(nice)             # raising an autogroup's nice needs no privilege


def set_group_nice(nice: int) -> bool:
    """Set the autogroup nice of the calling process's group (see `own_background_group`); True if done.
    Lowering it back towards 0 is allowed for a group whose nice this process raised (within RLIMIT_NICE, which
    for root and most desktop users covers 0); refused elsewhere, then False."""
    try:
        with open(AUTOGROUP, "w") as f:
            f.write(str(int(nice)))
        return True
    except OSError:
        return False

"""The batching kernel run by a forked child process, so that a short `plan` loads Numba and
Polars on two cores at once.

A `plan` command line needs NumPy, Numba (the kernel) and Polars (the metrics); importing them
one after the other is most of a short run (bench/README.md, "Start-up of the 2-GPU example").
`start()`, called by `apex_fast/entry.py` once NumPy and the modules both sides need are loaded
(`preload`) and before the command-line interface is, forks a child that imports Numba and the
cached kernel while the parent parses the options, builds the plans and cost tables. The parent
then sends each `simulate_stream` call to the child over a pipe (the arrays, pickled) and, while
the child simulates the first stream, imports Polars. The child runs the very same compiled
kernel on the same arrays, so the results are the same bytes as in one process.

Only the process that forked the child uses it (`call` returns None elsewhere, e.g. in a worker
of a process pool, which then loads the kernel itself), and the parent runs the kernel itself
whenever there is no child: no fork on this platform, no idle core (`idle_core`), `APEX_FORK=0`
in the environment, the fork failed, the child died or could not load or run the kernel. The
child ignores Ctrl-C (the parent handles it and ends the child); the parent ends the child
(SIGKILL, then waits for it) when it exits (`stop`, an atexit handler, also run by
entry.exit_now) or when a call is interrupted, so no child outlives the command unreaped.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

# APEX_FORK=0: never fork (the kernel runs in the command's process); 1: always (where the
# platform can); unset or auto: when a core is idle (`idle_core`)
FORK_ENV = "APEX_FORK"
# modules imported before the fork, once instead of once on each side: NumPy, numpy.ma (Numba
# types the kernel's arguments with it; Polars loads it at its first DataFrame, which comes after
# the wait for the child) and numpy.random (Numba and the workload options). What the parent
# needs only inside its Polars import (importlib.metadata, logging) loads on both sides
# instead, during the wait, so that bad input that ends before any simulation does not pay it.
SHARED = ("numpy", "numpy.ma", "numpy.random")
# modules the parent imports while the child runs the first stream: the metrics need them next
PREFETCH = ("polars",)
# `simulate_stream` arguments the kernel only writes (record rows): sent as shape and dtype,
# and only their first nrec rows come back (kernels/batching.py)
WRITE_ONLY = (16, 17)
N_ARGS = 19
PIPE_BYTES = 1 << 20  # Linux's default most for an unprivileged process (fs.pipe-max-size)
_HEAD = struct.Struct("<q")

# the child serving this process: (owner pid, child pid, request pipe, reply pipe)
_CHILD: list[tuple[int, int, BinaryIO, BinaryIO]] = []
_PREFETCHED: list[bool] = []


def preload() -> None:
    """Import what both processes need, once, before the fork (see SHARED)."""
    import importlib

    for name in SHARED:
        importlib.import_module(name)


def enabled() -> bool:
    """Whether `start` may fork: the platform has fork, and APEX_FORK is 1, or unset (or
    `auto`) with a core to spare (`idle_core`); APEX_FORK=0: never."""
    if not hasattr(os, "fork"):
        return False
    mode = os.environ.get(FORK_ENV, "auto").strip().lower()
    if mode in ("0", "no", "off", "false"):
        return False
    return mode in ("1", "yes", "on", "true") or idle_core()


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def idle_core() -> bool:
    """Whether a core is free for the child: two usable cores or more, no more than cores - 2
    other tasks running right now (Linux: /proc/loadavg) and a 1-minute load average below
    cores - 0.5 (commands run back to back keep it near 1 by themselves). Otherwise the two processes only share the busy cores (Linux's scheduler shares
    the CPU between sessions, not processes, when autogroup is on), the child's work is not
    overlapped and the fork's own cost (copied memory pages, the records sent back, Numba loaded
    for bad input that ends early) makes the command slower: 0.3 s more CPU and wall for the
    README's 2-GPU example with another busy process on a 2-core machine (bench/README.md)."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average: assume the machine is busy
        return False
    others = 0
    try:
        with open("/proc/loadavg") as f:  # "0.52 0.40 0.31 2/180 1234": 2 running, us included
            others = int(f.read().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        pass
    return cores >= 2 and others <= cores - 2 and load < cores - 0.5


def start() -> bool:
    """Fork the kernel's child process (once per process). Returns whether one serves this
    process now. Call it before any thread of this process starts."""
    if _CHILD:
        return _CHILD[0][0] == os.getpid()
    if not enabled():
        return False
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    _widen(req_w)
    _widen(rep_w)
    # a Ctrl-C between the fork and the child's SIG_IGN must not end the child with a traceback
    # of its own: SIGINT is blocked across the fork; the parent gets a pending one on unblocking
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for fd in (req_r, req_w, rep_r, rep_w):
            os.close(fd)
        return False
    if pid == 0:  # the child: serve, never return into the command line
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(req_w)
            os.close(rep_r)
            code = _serve(req_r, rep_w)
        finally:
            os._exit(code)
    os.close(req_r)
    os.close(rep_w)
    _CHILD.append((os.getpid(), pid, os.fdopen(req_w, "wb"), os.fdopen(rep_r, "rb")))
    atexit.register(stop)
    # a Ctrl-C pending since the fork is raised now, with the child on record to be ended
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return True


def _widen(fd: int) -> None:
    """Let the pipe hold PIPE_BYTES (Linux; elsewhere or if refused, its default size): a
    stream's arguments then fit while the child is still loading Numba."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def serves() -> bool:
    """Whether a child forked by this very process runs the kernel."""
    return bool(_CHILD) and _CHILD[0][0] == os.getpid()


def stop() -> None:
    """End the child (if this process forked one) and wait for it."""
    if not _CHILD or _CHILD[0][0] != os.getpid():
        return
    owner, pid, req, rep = _CHILD.pop()
    for f in (req, rep):
        try:
            f.close()
        except OSError:
            pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def call(args: tuple[Any, ...]) -> int | None:
    """Run `simulate_stream(*args)` in the child and write its outputs into `args`' arrays as
    the kernel would have; the kernel's return value, or None if no child serves this process
    or the child failed (the caller then runs the kernel itself)."""
    if not serves() or len(args) != N_ARGS or not all(hasattr(a, "dtype") for a in args):
        return None
    _, _, req, rep = _CHILD[0]
    sent = tuple((a.shape, a.dtype) if i in WRITE_ONLY else a for i, a in enumerate(args))
    try:
        payload = pickle.dumps(sent, protocol=pickle.HIGHEST_PROTOCOL)
        # what the pipe takes now; the rest once Polars is loaded (the child may still be
        # loading Numba and not reading yet)
        rest = _send_some(req, _HEAD.pack(len(payload)) + payload)
        if not _PREFETCHED:
            _PREFETCHED.append(True)
            for name in PREFETCH:  # while the child simulates
                if name not in sys.modules:
                    __import__(name)
        req.write(rest)
        req.flush()
        reply = _receive(rep)
        if reply is None:
            raise EOFError("the kernel's process ended")
        status, nrec, arrays = pickle.loads(reply)
    except KeyboardInterrupt:
        stop()
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
        stop()
        return None
    if status != "ok":  # the kernel failed there: the caller runs it here and sees why
        return None
    for i, b in arrays.items():  # what the kernel wrote (record arrays: the rows it wrote)
        if i in WRITE_ONLY:
            args[i][: b.shape[0]] = b
        else:
            args[i][...] = b
    return nrec


def _send_some(f: BinaryIO, data: bytes) -> bytes:
    """Write to the pipe `f` what it takes without waiting; the rest of `data` is returned."""
    fd = f.fileno()
    os.set_blocking(fd, False)
    try:
        done = 0
        while done < len(data):
            try:
                done += os.write(fd, data[done : done + (1 << 16)])
            except BlockingIOError:
                break
    finally:
        os.set_blocking(fd, True)
    return data[done:]


def _send(f: BinaryIO, payload: bytes) -> None:
    f.write(_HEAD.pack(len(payload)))
    f.write(payload)
    f.flush()


def _receive(f: BinaryIO) -> bytes | None:
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    (size,) = _HEAD.unpack(head)
    payload = f.read(size)
    return payload if len(payload) == size else None


def _serve(req_fd: int, rep_fd: int) -> int:
    """The child: load the kernel, then answer calls until the parent closes the pipe."""
    # the child writes nothing: a reader of the command's output (`| head`) must not wait for it
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    import numpy as np

    from apex_fast.sim.kernel_load import local_kernel

    kernel = local_kernel()
    req = os.fdopen(req_fd, "rb")
    rep = os.fdopen(rep_fd, "wb")
    while True:
        msg = _receive(req)
        if msg is None:
            return 0
        sent = pickle.loads(msg)
        args = [np.empty(*s) if i in WRITE_ONLY else s for i, s in enumerate(sent)]
        # the arguments' bytes as received, to send back only what the kernel changed
        before = [None if i in WRITE_ONLY else a.tobytes() for i, a in enumerate(args)]
        try:
            nrec = int(kernel(*args))
        except Exception:
            _send(rep, pickle.dumps(("error", 0, {}), protocol=pickle.HIGHEST_PROTOCOL))
            continue
        rows = max(nrec, 0)
        changed = {
            i: a[:rows] if i in WRITE_ONLY else a
            for i, a in enumerate(args)
            if i in WRITE_ONLY or a.tobytes() != before[i]
        }
        _send(rep, pickle.dumps(("ok", nrec, changed), protocol=pickle.HIGHEST_PROTOCOL))

"""Stop a whole multi-process (DDP) run when one rank fails, and say once which rank and why.

With ``--devices N`` on one node, Lightning's subprocess launcher re-runs the command line as
ranks 1..N-1, child processes of the command the user started (rank 0, the "launcher"). Measured
with Lightning 2.6 (see docs/reliability.md), left alone:

- a child that fails is noticed by Lightning's observer thread in rank 0 within 5 s, which then
  SIGKILLs every process, rank 0 included: exit 137 and no word of which rank died or why when
  the child exited or was killed, and a second traceback (gloo "Connection closed by peer") from
  a rank that was waiting in a collective;
- rank 0 failing ends only rank 0: the children run on as orphans until their next collective
  (the end of all their videos: hours on a real data set) and then print their own traceback.

What this module adds (nothing changes for a single-process run):

- in the launcher, a watcher thread takes the children over from Lightning's observer (it polls
  every 0.1 s instead of 5 s). When a child ends with a non-zero status it prints one line unless
  the child printed its own (status 1 or 2, see below), kills the other children and ends rank 0;
- :meth:`RankGuard.report` (called by the command line for any error) prints the failing rank's
  error as one line and, in the launcher, kills the children first; an error that only says a
  peer went away (a gloo connection error) waits briefly so the rank that really failed is named;
- in a child rank, a watchdog thread ends the process (one line from local rank 1) when its
  launcher is gone, so nothing is left behind, and a child that reported its error ends at once.

No collective timeout is involved: a rank may wait at the final barrier for hours for a slower one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

from ..utils.compat import adopt_lightning_child_processes

__all__ = ["PROG", "RankGuard", "install", "is_peer_failure"]

PROG = "dvis_attn_pl"
POLL_S = 0.1  # how often the threads look at the other processes
PEER_WAIT_S = 3.0  # how long a "peer went away" error waits for the rank that really failed
CHILD_EXIT_WAIT_S = 120.0  # after a successful run: how long rank 0 waits for the children to end
REPORTED_CODES = (1, 2)  # a child that ends with one of these printed its own error line

_PEER_MESSAGES = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "remote worker",
    "socket timeout",
)

INTERRUPT_WAIT_S = 10.0  # how long the watcher leaves an interrupted launcher to end by itself
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; `kill`, a scheduler's time limit or preemption
interrupted = threading.Event()  # this process received one of STOP_SIGNALS
_stop_signal: list[int] = []


def _on_stop_signal(signum, frame) -> None:
    """SIGINT or SIGTERM: remember it (Lightning turns the interrupt into ``sys.exit(1)``), then
    interrupt the main thread as Ctrl-C does."""
    if not interrupted.is_set():
        _stop_signal.append(signum)
        interrupted.set()
    raise KeyboardInterrupt


def interrupt_code() -> int:
    """The shell's status for a command ended by the stop signal received: 128 + its number."""
    return 128 + (_stop_signal[0] if _stop_signal else signal.SIGINT)


def interrupt_message() -> str:
    """``interrupted`` (Ctrl-C) or ``terminated (SIGTERM)``."""
    if _stop_signal and _stop_signal[0] == signal.SIGTERM:
        return "terminated (SIGTERM)"
    return "interrupted"


def is_peer_failure(exc: BaseException) -> bool:
    """True when ``exc`` only says that another process of the job went away (a collective failed)."""
    try:
        import torch.distributed as dist

        dist_errors: tuple = (dist.DistError,) if hasattr(dist, "DistError") else ()
    except Exception:  # noqa: BLE001 - torch.distributed missing: only the message test is left
        dist_errors = ()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if dist_errors and isinstance(exc, dist_errors):
            return True
        text = str(exc).lower()
        if isinstance(exc, (RuntimeError, OSError)) and any(m in text for m in _PEER_MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _wait_forever() -> None:
    """Another thread is stopping the process (it ends with ``os._exit``)."""
    while True:
        time.sleep(1.0)


def _say(line: str) -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _hard_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _env_int(name: str, default: int = 0) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class RankGuard:
    """The per-process guard; :func:`install` makes the one of this process.

    Args:
        num_nodes: ``--num-nodes`` (to number the ranks of another node's processes).
    """

    def __init__(self, num_nodes: int = 1) -> None:
        self.num_nodes = max(int(num_nodes), 1)
        self.local_rank = _env_int("LOCAL_RANK")
        self.is_child = "LOCAL_RANK" in os.environ and self.local_rank > 0
        self.parent_pid = os.getppid()
        self._start_env = {  # Lightning removes some of these at its teardown
            "WORLD_SIZE": _env_int("WORLD_SIZE", 1),
            "RANK": _env_int("RANK", -1),
            "NODE_RANK": _env_int("NODE_RANK"),
        }
        self.procs: list = []  # the launcher's child ranks (subprocess.Popen), once Lightning started them
        self._reported = False  # report() ran in this process (it stopped the children already)
        self._lock = threading.Lock()
        self._claimed = False  # someone is stopping the job: every other path stands back
        self.closed = threading.Event()  # the command ended: the watcher thread stops
        if self.is_child:
            target, name = self._watch_parent, "dvis-attn-pl-parent-watch"
        else:
            target, name = self._watch_children, "dvis-attn-pl-rank-watch"
        self._watcher = threading.Thread(target=target, name=name, daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """The command ended: stop the watcher thread, so that a later command in this process
        (a notebook, a test) gets a guard of its own and no old thread adopts its child ranks."""
        self.closed.set()
        if self._watcher is not threading.current_thread():
            self._watcher.join(timeout=2 * POLL_S + 1.0)

    def _claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    # ------------------------------------------------------------------ ranks
    @property
    def world_size(self) -> int:
        """Processes in the job (Lightning drops WORLD_SIZE from the environment at its teardown,
        so a child keeps the value it started with and the launcher counts its children)."""
        if self.procs:
            return (len(self.procs) + 1) * self.num_nodes
        return max(self._start_env["WORLD_SIZE"], _env_int("WORLD_SIZE", 1))

    def global_rank(self, local_rank: int | None = None) -> int:
        """Global rank of this process (or of a local rank of this node)."""
        if local_rank is None and self._start_env["RANK"] >= 0:  # set by torchrun / cluster schedulers
            return self._start_env["RANK"]
        local = self.local_rank if local_rank is None else local_rank
        per_node = max(self.world_size // self.num_nodes, 1)
        return max(self._start_env["NODE_RANK"], _env_int("NODE_RANK")) * per_node + local

    def _label(self) -> str | None:
        return f"rank {self.global_rank()}" if self.world_size > 1 else None

    # ------------------------------------------------------------------ launcher side
    def _take_over_observer(self) -> bool:
        """Adopt the children Lightning's observer thread watches; it then stops by itself."""
        if self.procs:
            return True
        procs = adopt_lightning_child_processes()
        if procs is None:
            return False
        self.procs = procs
        return True

    def _failed_child(self) -> tuple[int, object] | None:
        for index, proc in enumerate(self.procs):
            code = proc.poll()
            if code:
                return index + 1, proc
        return None

    def _watch_children(self) -> None:
        while not self._take_over_observer():
            if self.closed.wait(POLL_S):
                return
        while not self.closed.wait(POLL_S):
            failed = self._failed_child()
            if failed is not None:
                self._stop_for_child(*failed)
                return
            if all(p.returncode == 0 for p in self.procs):
                return

    def _kill_children(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.kill()  # SIGKILL: a rank may sit in a collective that ignores SIGTERM
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except Exception:  # noqa: BLE001 - nothing more can be done for it
                pass

    def _stop_for_child(self, local_rank: int, proc) -> None:
        """A child ended with a non-zero status: say so (unless it did), stop the rest, end rank 0."""
        if not self._claim():
            _wait_forever()
        code = proc.returncode
        rank = self.global_rank(local_rank)
        if interrupted.is_set():  # the stop signal reached the whole job: the launcher says so once
            time.sleep(INTERRUPT_WAIT_S)
            self._kill_children()
            _hard_exit(interrupt_code())
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            _say(f"{PROG}: error: rank {rank} failed: process {proc.pid} was stopped by {_signal_name(code - 128)}")
        elif code < 0:
            _say(f"{PROG}: error: rank {rank} failed: process {proc.pid} was killed by {_signal_name(-code)}")
        elif code not in REPORTED_CODES:
            _say(f"{PROG}: error: rank {rank} failed: process {proc.pid} exited with status {code}")
        self._kill_children()
        _hard_exit(code if code > 0 else 1)

    def stop_children(self) -> None:
        """After Ctrl-C in the launcher: kill the child ranks; :meth:`finish` then only returns."""
        self._claim()
        self._kill_children()
        self._reported = True

    def wait_children(self, timeout: float = CHILD_EXIT_WAIT_S) -> int:
        """After rank 0 finished well: wait for the children to end; a status for the job."""
        self._take_over_observer()
        deadline = time.monotonic() + timeout
        while self.procs and time.monotonic() < deadline:
            failed = self._failed_child()
            if failed is not None:
                self._stop_for_child(*failed)
            if all(p.returncode == 0 for p in self.procs):
                return 0
            time.sleep(POLL_S)
        if not self.procs:
            return 0
        if self._claim():
            late = [str(self.global_rank(i + 1)) for i, p in enumerate(self.procs) if p.poll() is None]
            _say(f"{PROG}: error: rank {', '.join(late)} did not end within {timeout:.0f} s after the run finished")
            self._kill_children()
            return 1
        _wait_forever()
        return 1

    # ------------------------------------------------------------------ child side
    def _watch_parent(self) -> None:
        while not self.closed.wait(POLL_S):
            if os.getppid() != self.parent_pid:
                if not self._claim():
                    return
                if self.local_rank == 1:  # one line for the whole node
                    _say(
                        f"{PROG}: error: rank {self.global_rank(0)} failed: the launching process "
                        f"{self.parent_pid} ended before the run finished; stopped rank {self.global_rank()}"
                    )
                _hard_exit(1)

    # ------------------------------------------------------------------ both
    def report(self, exc: BaseException, describe: Callable[[BaseException], str], code: int, trace: bool) -> int:
        """Print this rank's error as one line (after a traceback when ``trace``); stop the other
        ranks if this is the launcher; returns the exit status (a child process ends here)."""
        if self._has_peers():
            if is_peer_failure(exc):
                self._wait_for_culprit()
            if not self._claim():
                _wait_forever()
            self._kill_children()
        if trace:
            traceback.print_exception(exc, file=sys.stderr)
        self._reported = True
        label = self._label()
        text = describe(exc)
        _say(f"{PROG}: error: {label} failed: {text}" if label else f"{PROG}: error: {text}")
        if self.is_child:
            _hard_exit(code)
        return code

    def finish(self, code: int) -> int:
        """The end of the command in this process: rank 0 waits for the children after a success
        and stops them after a failure; returns the job's exit status."""
        if self.is_child or self._reported or not self._has_peers():
            return code
        if code == 0:
            return self.wait_children()
        if self._claim():
            self._kill_children()
            return code
        _wait_forever()
        return code

    def _has_peers(self) -> bool:
        return self.is_child or self._take_over_observer()

    def _wait_for_culprit(self) -> None:
        """A peer went away: give the process that really failed time to be seen (its own path
        then ends this process); return if none is seen."""
        deadline = time.monotonic() + PEER_WAIT_S
        while time.monotonic() < deadline:
            if self.is_child:
                if os.getppid() != self.parent_pid:
                    time.sleep(2 * POLL_S)  # the parent watchdog is ending this process
            else:
                self._take_over_observer()
                failed = self._failed_child()
                if failed is not None:
                    self._stop_for_child(*failed)
            time.sleep(POLL_S)


_guard: RankGuard | None = None


def install(num_nodes: int = 1) -> RankGuard:
    """The guard of this command (a new one once the previous command's guard was closed; until
    then later calls return it). In the main thread it also turns SIGINT and SIGTERM into an
    interrupt (see :data:`interrupted`)."""
    global _guard
    if _guard is None or _guard.closed.is_set():
        interrupted.clear()  # a Ctrl-C of an earlier command in this process is not this one's
        _guard = RankGuard(num_nodes)
        if threading.current_thread() is threading.main_thread():
            for signum, default in zip(STOP_SIGNALS, (signal.default_int_handler, signal.SIG_DFL)):
                if signal.getsignal(signum) is default:
                    signal.signal(signum, _on_stop_signal)
    return _guard

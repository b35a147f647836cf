"""Lanes in worker processes: ``concurrency`` for sends that wait on another system.

Threads share one interpreter lock, so however many lanes wait on a slow target, the
engine's own work for each send (map, validate, render, the HTTP client) runs on one core
at a time; at 16 lanes against a 20 ms target that, not the target, was the limit
(docs/benchmarks.md, section 6). So a flow whose calls all go through connectors that can
run in another process (``Connector.lanes == "processes"``: http, tryton) runs its lanes
in worker processes forked from the run, a few lanes (threads) in each.

The run keeps what must be one: the source, the cursor, the records' traces, dead letters
and review items, the run log and the group commit. A lane process takes records through
the steps with a connection of its own to the state (key look-ups, in-flight marks, the
outcomes of its sends: its own :class:`~engine.group.Group`) and connectors of its own
(its own HTTP clients), and sends back each record's result with the run-log events its
steps wrote and the secrets its connectors declared. Rate limits and circuit breakers are
shared between the processes (engine/retry.py).

Records that share a key are taken in the source's order: while a key has records on a
lane, its next ones go to that lane; a key with none goes to the lane with the least work
queued, so that no lane is left with a longer share of the work than the others.

Group commit: a lane process commits its sends' outcomes with its next in-flight mark
(one transaction), or on its own when no mark came within a few milliseconds, and sends a
record's result back only once the outcomes of its sends are committed. So every result
the run completes has its outcomes in the state already, and the run commits its groups
without waiting for the lane processes: the cursor never passes a record whose outcome
the state does not hold, as with threads.

Crashes: a lane process dies with the run's process (``PR_SET_PDEATHSIG`` on Linux),
as its threads would. A lane process that dies on its own ends the run
(:class:`LaneLost`, exit 3) and nothing more is committed: the next run takes the last
group again, its requests in flight with the same ``Idempotency-Key``
(docs/semantics.md, "Concurrency").

Processes are forked (Linux only: elsewhere the lanes are threads), after the flow is
compiled and before the source is read, while no thread of the run is inside the state
store; a lane process opens its own connections and never touches those of the run.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import multiprocessing
import os
import pickle
import queue
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from engine.errors import LaneLost, RunError
from engine.lanes import assign

T = TypeVar("T")

_LANE_QUEUED = 2  # items sent to a lane and not answered yet: one at work, one ready
SETTLE_WITHIN = 0.005  # seconds a result waits for a mark to commit its outcomes, then a flush
# seconds the other lane processes have to end once one was lost; then they are killed (the
# lost one may have died holding call slots, engine/retry.py, that the others wait for)
LOST_GRACE = 10.0
READY_WITHIN = 30.0  # seconds a lane process may take to build its worker
_PR_SET_PDEATHSIG = 1


def fork_context() -> ForkContext | None:
    """The context lane processes are forked from, or None where they are not (off Linux,
    where forking a process that has threads is not safe)."""
    if not sys.platform.startswith("linux"):
        return None
    return multiprocessing.get_context("fork")


def process_count(concurrency: int) -> int:
    """How many lane processes a run with ``concurrency`` lanes uses: one per core it may
    run on, at most one per lane; none (threads) in a process that runs other threads than
    the caller, which may hold locks a fork would copy. ``FLOWYARD_LANE_PROCESSES`` sets it
    (0: threads), other threads or not."""
    given = os.environ.get("FLOWYARD_LANE_PROCESSES", "").strip()
    if given.isdigit():
        return min(int(given), concurrency)
    if threading.active_count() > 1:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return min(cores, concurrency) if cores > 1 else 0


class Worker(Protocol):
    """What runs in a lane process: made there, after the fork, by the run's factory."""

    def execute(self, payload: Any) -> Any:
        """Take one item (as the run sent it) through; the answer goes back to the run."""

    def ticket(self) -> int:
        """A count the process's commits must reach before an answer made until now may go
        back to the run (its outcomes are committed)."""

    def settled(self) -> int:
        """How far the process's commits have reached (see :meth:`ticket`)."""

    def on_settled(self, tell: Callable[[int], None]) -> None:
        """Call ``tell(settled)`` after each commit."""

    def flush(self) -> None:
        """Commit what the process holds (the outcomes of its sends)."""

    def close(self) -> None:
        """The process is ending: close its connectors and its state connection."""


class WriteLock:
    """One writer at a time among the run's processes (the run and its lane processes)
    on the state: a thread lock in each process, and a POSIX lock on a file they all
    inherited, which the system frees when its holder dies (a lane process killed mid-write
    cannot leave the run waiting for ever). SQLite would serialise them too, but a writer it
    turns away sleeps in steps of 1, 2, 5, 10 ms and more, which at hundreds of writes a
    second added milliseconds to every send; here a waiter is woken when the lock is free.
    """

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="flowyard-lanes-", suffix=".lock")
        os.unlink(path)  # the descriptor keeps it while the run lasts; nothing is left
        self._fd = fd
        self._threads = threading.Lock()

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling as itself, else a :class:`RunError` saying what it was."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:
        pass
    return RunError(f"{type(exc).__name__}: {exc}")


@dataclass
class _Process:
    """The run's side of one lane process."""

    number: int
    process: Any  # multiprocessing's Process of the fork context
    conn: Connection
    queued: int = 0  # items sent and not yet answered
    stop_sent: bool = False
    drop_sent: bool = False
    ready: bool = False  # its worker is built
    stopped: bool = False  # it said so, having flushed and closed
    gone: bool = False  # its process ended
    items: set[int] = field(default_factory=set)

    def send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except OSError:
            pass  # it is gone: its sentinel says so, and the run hears it there


class ProcessLanes(Generic[T]):
    """Runs items on ``lanes`` lanes spread over ``processes`` forked processes.

    ``start_worker`` builds the :class:`Worker` in each process after the fork; each item
    goes there as ``payload(item)``, and its answer comes back to ``complete(item,
    answer)``, called on the calling thread only (the runner's accounting needs no lock).
    """

    def __init__(
        self,
        lanes: int,
        processes: int,
        context: ForkContext,
        start_worker: Callable[[], Worker],
        payload: Callable[[T], Any],
        complete: Callable[[T, Any], None],
        stopping: Callable[[], bool],
    ):
        self.count = lanes
        self.context = context
        self.start_worker = start_worker
        self.payload = payload
        self.complete = complete
        self.stopping = stopping
        self._wanted = max(1, min(processes, lanes))
        self._threads = -(-lanes // self._wanted)  # lanes per process
        self._procs: list[_Process] = []
        self._items: dict[int, tuple[T, Hashable, int]] = {}  # seq -> (item, key, lane)
        self._queued = [0] * lanes  # items sent to each lane and not yet answered
        self._keys: dict[Hashable, tuple[int, int]] = {}  # key -> (lane, its items there)
        self._seq = 0
        self._error: BaseException | None = None
        self._lost_at: float | None = None  # when a lane process was lost
        self._poller = select.poll()  # the processes' pipes and sentinels
        self._watched: dict[int, tuple[_Process, bool]] = {}  # fd -> (process, is its pipe)
        self._drains = 0  # calls of _drain so far: a nested one makes a poll's events stale
        self.write_lock = WriteLock()  # the run's and its processes' writes to the state

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, ready_within: float | None = None) -> None:
        """Fork the processes and wait until each has built its worker. Call it where no
        other thread of the run holds a lock that a process will need (the state store's:
        engine/lease.py pauses its renewals). Raises :class:`LaneLost` (the processes
        killed) when one could not start, or did not within ``ready_within`` seconds: a
        lock another thread held at the fork can keep it waiting for ever."""
        parent = os.getpid()
        # what exists now is the processes' for good (the flow, its templates, modules):
        # frozen, their collector never walks it, nor copies its pages to do so
        gc.freeze()
        try:
            self._fork(parent)
        finally:
            gc.unfreeze()
        ready_within = READY_WITHIN if ready_within is None else ready_within
        deadline = time.monotonic() + ready_within
        while self._error is None and not all(p.ready for p in self._procs):
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(LaneLost(f"a lane process did not start within {ready_within:g} s"))
                break
            self._drain(block=True, timeout=left)
        if self._error is not None:
            for proc in self._procs:
                proc.process.kill()
                proc.process.join(timeout=5)
                proc.conn.close()
            self.write_lock.close()
            raise self._error

    def _fork(self, parent: int) -> None:
        for number in range(self._wanted):
            ours, theirs = self.context.Pipe()
            process = self.context.Process(
                target=_lane_process,
                args=(theirs, self._threads, self.start_worker, parent),
                name=f"flowyard-lanes-{number + 1}",
                daemon=True,
            )
            process.start()
            theirs.close()
            proc = _Process(number + 1, process, ours)
            self._procs.append(proc)
            for fd, is_pipe in ((ours.fileno(), True), (process.sentinel, False)):
                self._poller.register(fd, select.POLLIN)
                self._watched[fd] = (proc, is_pipe)

    def run(self, work: Iterable[T], key: Callable[[T], Hashable]) -> None:
        """Execute every item of ``work`` on a lane (the one holding its ``key``'s items, if any)
        and complete it here;
        stop handing out work once ``stopping()`` is true (items already queued are not
        run, and not completed). A lane's failure, or a lane process lost, is raised here
        once every process has ended."""
        if not self._procs:
            self.start()
        try:
            for item in work:
                if self._error is not None or self._stop_if_stopping():
                    break
                item_key = key(item)
                lane = self._lane_for(item_key)
                if lane is None or self._stop_if_stopping():
                    break
                proc = self._procs[lane % len(self._procs)]
                self._seq += 1
                self._items[self._seq] = (item, item_key, lane)
                self._assign(item_key, lane, +1)
                proc.items.add(self._seq)
                proc.queued += 1
                proc.send(("work", lane // len(self._procs), self._seq, self.payload(item)))
                self._drain(block=False)
            self._stop_all(drop=self.stopping() or self._error is not None)
            while not all(p.stopped or p.gone for p in self._procs):
                left = None if self._lost_at is None else self._lost_at + LOST_GRACE
                if left is not None and (left := left - time.monotonic()) <= 0:
                    for proc in self._procs:
                        if not (proc.stopped or proc.gone) and proc.process.is_alive():
                            proc.process.kill()
                    left = 1.0
                self._drain(block=True, timeout=left)
        except BaseException:
            self._abort()
            raise
        finally:
            for proc in self._procs:
                proc.process.join(timeout=5)
                proc.conn.close()
            self.write_lock.close()
        if self._error is not None:
            raise self._error

    @property
    def settled(self) -> bool:
        """Whether every process ended as told, having committed what it held, and none
        failed: the run may commit what it completed (after ``run`` raised, too)."""
        return self._error is None and all(p.stopped for p in self._procs)

    # -- the run's side ------------------------------------------------------------------------
    def _stop_if_stopping(self) -> bool:
        if self.stopping():
            self._stop_all(drop=True)
            return True
        return False

    def _stop_all(self, drop: bool) -> None:
        """No more work for the processes; ``drop``: nor for their lanes (what is queued there
        is not run), which may come after the end of the work was told."""
        for proc in self._procs:
            if proc.gone:
                continue
            if drop and not proc.drop_sent:
                proc.drop_sent = True
                proc.send(("drop",))
            if not proc.stop_sent:
                proc.stop_sent = True
                proc.send(("stop",))

    def _abort(self) -> None:
        """The run is failing here: stop the processes; kill those that do not stop."""
        self._stop_all(drop=True)
        try:
            while not all(p.stopped or p.gone for p in self._procs):
                self._drain(block=True, complete=False)
        except BaseException:
            for proc in self._procs:
                if proc.process.is_alive():
                    proc.process.kill()

    def _drain(self, block: bool, complete: bool = True, timeout: float | None = None) -> None:
        """Handle what the processes sent: once something came (``block``; at most
        ``timeout`` seconds) or what is there at once."""
        self._drains += 1
        wait_ms: float | None = (None if timeout is None else timeout * 1000) if block else 0
        while self._watched:
            events = self._poller.poll(wait_ms)
            if not events:
                return
            wait_ms = 0  # then whatever else is ready, without waiting
            for fd, _ in events:
                drains = self._drains
                watched = self._watched.get(fd)
                if watched is not None:
                    proc, is_pipe = watched
                    if is_pipe:
                        self._receive(proc, complete)
                    else:  # the process ended: what it sent before is still in the pipe
                        self._ended(proc, complete)
                if self._drains != drains:
                    break  # a nested drain read on meanwhile: what this poll saw is stale

    def _receive(self, proc: _Process, complete: bool) -> None:
        try:
            message = proc.conn.recv()
        except (EOFError, OSError):  # its end of the pipe is closed: the sentinel tells why
            self._unwatch(proc.conn.fileno())
            return
        self._handle(proc, message, complete)

    def _ended(self, proc: _Process, complete: bool) -> None:
        while True:
            try:
                if not proc.conn.poll():
                    break
                message = proc.conn.recv()
            except (EOFError, OSError):
                break
            self._handle(proc, message, complete)
        self._unwatch(proc.conn.fileno())
        self._unwatch(proc.process.sentinel)
        proc.gone = True
        if not proc.stopped:
            self._lost(proc)

    def _unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def _handle(self, proc: _Process, message: tuple[Any, ...], complete: bool) -> None:
        kind = message[0]
        if kind == "batch":
            if message[1][-1][0] == "stopped":
                # a process's last word, after it committed what it held: heard before its
                # last answers are completed, so that nothing completing them does (a group
                # commit) takes its end for a loss
                proc.stopped = True
            for one in message[1]:
                self._handle(proc, one, complete)
        elif kind == "done":
            _, seq, answer = message
            item = self._forget(proc, seq)
            if complete:
                self._completed(item, answer)
        elif kind == "not_run":
            self._forget(proc, message[1])
        elif kind == "stopped":
            proc.stopped = True
        elif kind == "failed":  # a lane raised (the state failed): the run cannot go on
            if message[1] is not None:
                self._forget(proc, message[1])
            self._fail(message[2])
        elif kind == "ready":
            proc.ready = True
        elif kind == "broken":  # the process could not start its worker
            self._fail(LaneLost(f"lane process {proc.number} could not start: {message[1]}"))

    def _completed(self, item: T, answer: Any) -> None:
        self.complete(item, answer)
        self._stop_if_stopping()

    def _lane_for(self, key: Hashable) -> int | None:
        """The lane for an item of ``key``: the lane that holds the key's items while it
        holds any (so they are taken in order), else the lane with the least work queued;
        waits while that lane is full. None when the work must stop."""
        while self._error is None:
            bound = self._keys.get(key)
            if bound is not None:
                lane = bound[0]
            else:
                live = [n for n in range(self.count) if not self._procs[n % len(self._procs)].gone]
                if not live:
                    return None
                lane = min(live, key=self._queued.__getitem__)
            if self._procs[lane % len(self._procs)].gone:
                return None
            if self._queued[lane] < _LANE_QUEUED:
                return lane
            self._drain(block=True)
        return None

    def _assign(self, key: Hashable, lane: int, change: int) -> None:
        assign(self._keys, self._queued, key, lane, change)

    def _forget(self, proc: _Process, seq: int) -> T:
        proc.queued -= 1
        proc.items.discard(seq)
        item, key, lane = self._items.pop(seq)
        self._assign(key, lane, -1)
        return item

    def _lost(self, proc: _Process) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        proc.process.join(timeout=1)  # its sentinel fired: it is ending, if not reaped yet
        code = proc.process.exitcode
        how = (
            f"killed by signal {-code}"
            if isinstance(code, int) and code < 0
            else f"exit code {code}"
        )
        for seq in list(proc.items):  # never completed: not final, the next run takes them
            self._forget(proc, seq)
        self._fail(
            LaneLost(
                f"lane process {proc.number} (pid {proc.process.pid}) ended ({how}) before "
                "the run did; the last group was not committed: the next run takes it again"
            )
        )

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._stop_all(drop=True)


# -- the lane process's side ---------------------------------------------------------------------
def _die_with(parent: int) -> None:
    """Be killed when the run's process dies (Linux), as a thread of it would be."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _lane_process(
    conn: Connection, threads: int, start_worker: Callable[[], Worker], parent: int
) -> None:
    """A lane process: a receiving loop (this thread), ``threads`` lanes and a sender."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run to handle
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except OSError:
            os._exit(1)  # the run is gone
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            if message[0] != "batch":
                conn.send(("failed", message[1] if len(message) > 1 else None, portable(exc)))
                return
            for one in message[1]:  # find the one that cannot go, and say so for it alone
                send(one)

    def sender() -> None:
        """Sends what the lanes and this process's loop put in the outbox: what is there
        at once in one message (fewer writes for the process, fewer wake-ups for the run)."""
        ending = False
        while not ending and (message := outbox.get()) is not None:
            batch = [message]
            while True:
                try:
                    more = outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                batch.append(more)
            send(batch[0] if len(batch) == 1 else ("batch", batch))

    sending = threading.Thread(target=sender, daemon=True, name="flowyard-lane-sender")
    sending.start()
    try:
        worker = start_worker()
    except BaseException as exc:
        _exit_after(sending, outbox, ("broken", f"{type(exc).__name__}: {exc}"), 1)
    outbox.put(("ready",))
    stop = threading.Event()
    inboxes: list[queue.SimpleQueue[tuple[int, Any] | None]] = [
        queue.SimpleQueue() for _ in range(threads)
    ]

    # answers whose outcomes are not committed yet, oldest first: (ticket, since, message),
    # sent once they are
    held: list[tuple[int, float, tuple[Any, ...]]] = []
    holding = threading.Condition()

    def release(settled: int) -> None:
        """A commit reached ``settled``: the answers it settled go back to the run."""
        with holding:
            keep = []
            for ticket, since, message in held:
                if ticket <= settled:
                    outbox.put(message)
                else:
                    keep.append((ticket, since, message))
            held[:] = keep

    worker.on_settled(release)

    def lane(inbox: queue.SimpleQueue[tuple[int, Any] | None]) -> None:
        while (got := inbox.get()) is not None:
            seq, payload = got
            if stop.is_set():
                outbox.put(("not_run", seq))
                continue
            try:
                answer = worker.execute(payload)
                ticket = worker.ticket()
            except BaseException as exc:
                stop.set()
                outbox.put(("failed", seq, portable(exc)))
                continue
            with holding:
                if worker.settled() >= ticket:
                    outbox.put(("done", seq, answer))
                else:  # the next mark commits its outcomes, or the settler below
                    held.append((ticket, time.monotonic(), ("done", seq, answer)))
                    holding.notify()

    lanes = [
        threading.Thread(target=lane, args=(inbox,), daemon=True, name=f"flowyard-lane-{i}")
        for i, inbox in enumerate(inboxes)
    ]

    closing = threading.Lock()  # a flush and the end do not overlap
    closed = threading.Event()

    def flush() -> None:
        with closing:
            try:
                if not closed.is_set():
                    worker.flush()
            except BaseException as exc:
                outbox.put(("failed", None, portable(exc)))

    def settler() -> None:
        """Commits the outcomes of an answer held SETTLE_WITHIN, when no lane's in-flight
        mark committed them meanwhile (the last records, a slow trickle)."""
        while not closed.is_set():
            with holding:
                if not held:
                    holding.wait()
                    continue
                left = held[0][1] + SETTLE_WITHIN - time.monotonic()
                if left > 0:
                    holding.wait(left)
                    continue
            flush()

    def end() -> None:
        """Once the lanes are done: commit what is held, close, say so, exit."""
        for thread in lanes:
            thread.join()
        flush()
        with closing:
            closed.set()
            with holding:
                holding.notify()
            try:
                worker.close()
            except BaseException:
                pass  # its outcomes are committed: a connector that fails to close is no loss
        _exit_after(sending, outbox, ("stopped",), 0)

    for thread in lanes:
        thread.start()
    threading.Thread(target=settler, daemon=True, name="flowyard-lane-settler").start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(1)  # the run is gone: so is this process, as its thread would be
        kind = message[0]
        if kind == "work":
            _, lane_number, seq, payload = message
            inboxes[lane_number].put((seq, payload))
        elif kind == "drop":
            stop.set()
        elif kind == "stop":  # this loop goes on receiving: a drop may come
            for inbox in inboxes:
                inbox.put(None)
            threading.Thread(target=end, daemon=True, name="flowyard-lane-end").start()


def _exit_after(
    sending: threading.Thread,
    outbox: queue.SimpleQueue[tuple[Any, ...] | None],
    last: tuple[Any, ...],
    code: int,
) -> NoReturn:
    """Send ``last`` after everything queued, then end the process."""
    outbox.put(last)
    outbox.put(None)
    sending.join(timeout=30)
    # never run the run's inherited clean-up (its log file's buffer, its state connection)
    os._exit(code)

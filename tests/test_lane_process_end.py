"""The end of a lane process, as the run hears it (engine/lane_processes.py).

A lane process's last message, ``stopped``, can reach the run in one batch with its last
answers. Completing one of those answers may commit the run's group; the run must not
take the end of a process that said it stopped in that same batch for a loss. It did
(when the group commit waited for the lane processes at a barrier): a run of 400 records,
all done, ended in ``LaneLost`` (exit 3), seen in test_crash.py on a loaded machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.lane_processes import ProcessLanes, fork_context

ANSWER = b"x" * 2_000_000  # more than a socket pair holds: the process waits on the run


class SlowAnswers:
    """A lane process's worker answering every item with 2 MB: the first once the run has
    handed out every item, the second at once, the others after 50 ms."""

    def __init__(self, handed_out: Any):
        self.handed_out = handed_out

    def execute(self, payload: Any) -> Any:
        if payload == 0:
            self.handed_out.wait(10)
        elif payload > 1:
            time.sleep(0.05)
        return payload, ANSWER

    def ticket(self) -> int:
        return 0  # no sends: nothing to commit before an answer goes back

    def settled(self) -> int:
        return 0

    def on_settled(self, tell: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.skipif(fork_context() is None, reason="lane processes need Linux")
def test_a_process_whose_last_batch_says_it_stopped_is_not_lost() -> None:
    context = fork_context()
    assert context is not None
    handed_out = context.Event()
    completed: list[int] = []

    def work() -> Iterator[int]:
        yield from range(4)  # as many as a lane takes at once
        handed_out.set()

    def complete(item: int, answer: Any) -> None:
        if item == 0:
            # the run is busy with the first answer: the second fills the pipe, and the
            # rest and "stopped" wait in the process's outbox meanwhile, for one batch
            time.sleep(0.5)
        assert answer == (item, ANSWER)
        completed.append(item)

    lanes: ProcessLanes[int] = ProcessLanes(
        1,
        1,
        context,
        start_worker=lambda: SlowAnswers(handed_out),
        payload=lambda item: item,
        complete=complete,
        stopping=lambda: False,
    )
    lanes.run(work(), key=lambda item: item)
    assert completed == list(range(4))
    assert lanes.settled

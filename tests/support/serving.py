"""``flowyard serve`` as a real subprocess for the tests: start it, wait until it is ready,
sign and send deliveries, stop it with a signal.

::

    with Serving(tmp_path, [flow], env={"HOOK_SECRET": "..."}) as srv:
        srv.deliver(body, sign("shopify", secret, body, event_id="ev-1", topic="orders/create"))
        srv.stop()                      # SIGTERM; srv.kill() for SIGKILL; srv.start() again
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serving:
    """One ``flowyard serve`` on 127.0.0.1, restartable on the same port and state."""

    def __init__(
        self,
        workdir: Path,
        flows: list[Path],
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        port: int | None = None,
        state: Path | str | None = None,
    ):
        self.workdir = Path(workdir)
        self.flows = flows
        self.env = env or {}
        self.args = args or []
        self.port = port or free_port()
        # a state file (its folder made), or a postgresql:// URL several processes share
        self.state = state or self.workdir / "state" / "state.db"
        if isinstance(self.state, Path):
            self.state.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.client = httpx.Client(timeout=10.0, trust_env=False)

    @property
    def log(self) -> Path:
        return self.workdir / f"serve-{self.port}.log"

    def start(self, timeout: float = 20.0) -> Serving:
        self.starts += 1
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO_ROOT)}
        env.pop("FLOWYARD_STATE", None)
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "serve",
                    *map(str, self.flows),
                    "--port",
                    str(self.port),
                    "--state",
                    str(self.state),
                    *self.args,
                ],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flowyard serve exited {self.proc.returncode}: {self.output()}")
            try:
                if self.client.get(self.url + "/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"flowyard serve was not ready in {timeout} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def deliver(self, body: bytes, headers: dict[str, str], path: str) -> httpx.Response:
        return self.client.post(self.url + path, content=body, headers=headers)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, and wait for the graceful stop; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> Serving:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.client.close()

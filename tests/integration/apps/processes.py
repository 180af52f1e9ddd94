"""Starting and stopping the real processes of the integration tests.

A ``Process`` runs a command in its own session with its output in a file,
so a test can wait for a log line while it runs and read everything it
wrote once it is stopped.  ``stop`` sends SIGTERM and, if the process has
not exited in time, kills its whole session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dramatiq_triggers.testing import wait_for

ROOT = Path(__file__).resolve().parents[3]
#: Lines that must not appear in the output of a run that went well.
TROUBLE = ("Traceback", "[ERROR]", "[CRITICAL]")


class Process:
    """One command running in the background, its output kept in ``log``."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.argv = list(argv)
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.returncode: int | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, *, count: int = 1, timeout: float = 30.0) -> bool:
        """Wait until ``text`` appears ``count`` times (or the process dies)."""
        return wait_for(
            lambda: self.output().count(text) >= count or self.popen.poll() is not None,
            timeout=timeout, interval=0.1,
        ) and self.output().count(text) >= count

    def stop(self, *, timeout: float = 30.0) -> str:
        """SIGTERM, then SIGKILL to the session after ``timeout``; returns the output."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        else:
            self.popen.wait()
        self.returncode = self.popen.returncode
        if not self._file.closed:
            self._file.close()
        return self.output()


class Processes:
    """The processes a test started; ``stop_all`` ends those still running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, argv: Sequence[str], env: dict[str, str], name: str) -> Process:
        process = Process(argv, env, self.directory / f"{name}-{len(self.started)}.log")
        self.started.append(process)
        return process

    def dramatiq(self, module: str, env: dict[str, str], *, processes: int = 1,
                 threads: int = 4) -> Process:
        """``python -m dramatiq <module>`` with that many processes and threads."""
        argv = [sys.executable, "-m", "dramatiq", module, "--processes", str(processes),
                "--threads", str(threads)]
        return self.start(argv, env, "dramatiq")

    def cron(self, module: str, env: dict[str, str]) -> Process:
        """The standalone cron, ``python -m dramatiq_triggers.cron_process <module>``."""
        argv = [sys.executable, "-m", "dramatiq_triggers.cron_process", module]
        return self.start(argv, env, "cron")

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def trouble(output: str) -> list[str]:
    """The lines of ``output`` that show an error, a traceback or a crash."""
    return [line for line in output.splitlines() if any(word in line for word in TROUBLE)]

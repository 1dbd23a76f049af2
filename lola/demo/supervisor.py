"""Child processes of the demo: started in their own sessions, always stopped.

Every child runs in its own session (process group); :class:`Supervisor` stops them
all when it exits, escalating to SIGKILL for any descendant still alive, and Ctrl-C
(SIGINT), SIGTERM and SIGHUP all take that path. Children also get
``PR_SET_PDEATHSIG`` so that even a SIGKILL of the demo stops its direct children.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psutil

from lola.demo.options import RUN_MARKER_ENV
from lola.errors import LolaError

_PR_SET_PDEATHSIG = 1


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """New session, and ask Linux to SIGTERM this child when its parent dies (even by SIGKILL).

    Written with ctypes because no maintained library wraps prctl(2) for a preexec hook.
    """
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not glibc Linux: the session and the supervisor's cleanup still apply


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path | None
    seen: set[int] = field(default_factory=set)


class Supervisor:
    """Starts children in their own process groups and stops all of them, always.

    Use as a context manager: SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in
    the main thread while it is active, and leaving it stops every child (and
    every descendant seen) with SIGTERM, then SIGKILL after ``grace_s``.
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None, grace_s: float = 15.0) -> None:
        self.log_dir = log_dir
        self.env = dict(env or os.environ)
        self.grace_s = grace_s
        self.children: dict[str, Child] = {}
        self._old_handlers: dict[int, Any] = {}
        self._stopping = False
        self._lock = threading.Lock()

    # --- lifecycle
    def __enter__(self) -> "Supervisor":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping:
            return  # already cleaning up: a second Ctrl-C must not abort the cleanup
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    # --- starting
    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        if name in self.children and self.children[name].popen.poll() is None:
            raise LolaError(f"child {name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:  # the child holds its own descriptor
            popen = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})}, preexec_fn=_pdeathsig, close_fds=True,
            )
        self.children[name] = Child(name, popen, log_path)
        self.note_descendants()
        return popen

    def adopt(self, name: str, popen: subprocess.Popen, log_path: Path | None = None) -> None:
        """Track a process started elsewhere (e.g. the broker launcher) so it is stopped too."""
        self.children[name] = Child(name, popen, log_path)

    # --- watching
    def note_descendants(self) -> None:
        """Remember every descendant pid now alive, so a SIGKILL can reach grandchildren later."""
        for child in list(self.children.values()):
            if child.popen.poll() is None:
                self._note(child)

    @staticmethod
    def _note(child: Child) -> None:
        try:
            child.seen.update(p.pid for p in psutil.Process(child.popen.pid).children(recursive=True))
        except psutil.Error:
            pass

    def alive(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.popen.poll() is None

    def log_tail(self, name: str, lines: int = 3) -> str:
        """The last lines of a child's log, on one line (for a report)."""
        child = self.children.get(name)
        path = child.log_path if child else None
        if path is None or not path.is_file():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " / ".join(line.strip() for line in text[-lines:])[:400]

    # --- stopping
    def stop(self, name: str, sig: int = signal.SIGTERM, grace_s: float | None = None) -> int | None:
        """Stop one child and its descendants; returns its exit code."""
        child = self.children.get(name)
        if child is None:
            return None
        grace = self.grace_s if grace_s is None else grace_s
        proc = child.popen
        self._note(child)
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL whatever is left: the child's process group, then any descendant seen.
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        for pid in child.seen:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.terminate()
                    try:
                        p.wait(timeout=min(grace, 5.0))
                    except psutil.TimeoutExpired:
                        p.kill()
            except psutil.Error:
                pass
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every child, newest first (load generator, worker, then the broker)."""
        with self._lock:
            self._stopping = True
            try:
                for name in reversed(list(self.children)):
                    self.stop(name)
            finally:
                self._stopping = False

    def write_pids(self, path: Path) -> None:
        """Every pid started or seen, per child, as JSON (the report counts them)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        pids = {name: sorted({c.popen.pid, *c.seen}) for name, c in self.children.items()}
        path.write_text(json.dumps(pids), encoding="utf-8")


def surviving_processes(run_id: str) -> list[int]:
    """Pids of live processes whose environment carries ``LOLA_DEMO_RUN=<run_id>`` (this one excluded)."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_MARKER_ENV) == run_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found

"""Child processes of the stack: start, watch, stop them all, leave no orphan."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StackError(RuntimeError):
    """A problem the user can act on; printed without a traceback."""


def as_user(user: str | None) -> dict:
    """subprocess arguments that drop to `user` with its own group (not root's gid)."""
    if not user:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def apt_install(packages: list[str], what: str) -> None:
    """Install Debian packages with apt-get (root only); otherwise say which command to run."""
    import shutil

    install = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{what} missing.\nInstall as root, then retry:\n  sudo apt-get update && sudo {install}")
    print(f"Installing {', '.join(packages)} with apt-get…", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ("apt-get update -qq", install + " -qq"):
        result = subprocess.run(command.split(), env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"`{command}` failed:\n{result.stderr[-2000:]}")


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_ports_free(named_ports: dict[str, int]) -> None:
    busy = {name: port for name, port in named_ports.items() if port_in_use(port)}
    if busy:
        lines = "\n".join(f"  - port {port} ({name}=… to choose another)" for name, port in busy.items())
        raise StackError(
            "Ports already in use on 127.0.0.1, nothing was started:\n"
            f"{lines}\n"
            "Another stack may be running (`make down`), or set the variables above."
        )


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) of every live process, read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def processes_in_group(pgid: int) -> list[int]:
    """Pids whose process group is pgid (so it also finds grandchildren)."""
    return [pid for pid, (_, group) in _process_table().items() if group == pgid]


def process_tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants, whatever their process group (PostgreSQL's backends
    start their own sessions)."""
    children: dict[int, list[int]] = {}
    table = _process_table()
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(pgids: list[int], timeout: float = 15.0) -> list[int]:
    """Stop process groups we no longer have handles on (`make down`); returns pids still alive."""
    for pgid in reversed(pgids):
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(processes_in_group(pgid) for pgid in pgids):
        time.sleep(0.2)
    for pgid in pgids:
        signal_group(pgid, signal.SIGKILL)
    time.sleep(0.3)
    return [pid for pgid in pgids for pid in processes_in_group(pgid)]


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path


@dataclass
class ProcessGroup:
    """Every process the stack starts, in start order; stopped in reverse order."""

    logs_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> Child:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        log = open(log_path, "ab")
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            **as_user(user),
            # Its own process group, so stopping it also stops the workers it forks.
            start_new_session=True,
        )
        log.close()
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def child(self, name: str) -> Child:
        """The running child called `name` (the newest, after a restart)."""
        for child in reversed(self.children):
            if child.name == name:
                return child
        raise StackError(f"No process {name!r} in this stack.")

    def kill(self, child: Child) -> None:
        """SIGKILL the child and every process under it, whatever their group (task processes may
        start their own), as if its machine had died; the group forgets it."""
        for pid in process_tree([child.process.pid]) + processes_in_group(child.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        child.process.wait(10)
        self.children.remove(child)

    def terminate(self, child: Child, timeout: float = 60.0) -> None:
        """SIGTERM the child's group and wait for it to exit (SIGKILL after `timeout`); the group
        forgets it."""
        signal_group(child.process.pid, signal.SIGTERM)
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(child.process.pid, signal.SIGKILL)
            child.process.wait(5)
        self.children.remove(child)

    def dead(self) -> list[Child]:
        return [child for child in self.children if child.process.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each child's process group (newest first), then SIGKILL whatever is left."""
        for child in reversed(self.children):
            signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(child.process.pid, signal.SIGKILL)
            try:
                child.process.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def pgids(self) -> list[int]:
        return [child.process.pid for child in self.children]

    def log_tail(self, child: Child, lines: int = 25) -> str:
        try:
            return "\n".join(child.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    group: ProcessGroup | None = None,
    interval: float = 0.5,
) -> Any:
    """Poll check() until it returns a true value, and return that value; fail early and clearly
    if one of the group's children died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if group is not None and (dead := group.dead()):
            child = dead[0]
            raise StackError(
                f"{child.name} exited (code {child.process.returncode}) while waiting for {what}.\n"
                f"Last lines of {child.log_path}:\n{group.log_tail(child)}"
            )
        time.sleep(interval)
    raise StackError(f"Timed out after {timeout:.0f} s waiting for {what}.")

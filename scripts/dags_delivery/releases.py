"""Release directories beside the DAG folder, the atomic switch between them, the state file.

Layout on disk, for DAGS_FOLDER=/opt/airflow/dags::

    /opt/airflow/dags -> .dags.releases/<release>      (symlink, replaced with rename(2))
    /opt/airflow/.dags.releases/<release>/...          current tree
    /opt/airflow/.dags.releases/<previous>/...         kept for rollback, older ones pruned
    /opt/airflow/.dags.releases/state.json             key -> etag/md5 of the current release
    /opt/airflow/.dags.releases/lock                   flock: one sync at a time
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EXIT_CONFIG, EXIT_DEPLOY_IN_PROGRESS, SyncError

STATE_FORMAT = 1


@dataclass
class Layout:
    dags_folder: Path
    releases_override: Path | None = None

    @property
    def releases_dir(self) -> Path:
        """Beside DAGS_FOLDER by default (same filesystem: hard links and rename(2) work)."""
        if self.releases_override is not None:
            return self.releases_override
        return self.dags_folder.parent / f".{self.dags_folder.name}.releases"

    @property
    def state_path(self) -> Path:
        return self.releases_dir / "state.json"

    def link_target(self, release: str) -> str:
        # Relative when beside the folder, so the layout survives a move or a different mount path.
        if self.releases_dir.parent == self.dags_folder.parent:
            return f"{self.releases_dir.name}/{release}"
        return str(self.releases_dir / release)

    def current_release(self) -> str | None:
        """Name of the release DAGS_FOLDER points to, None when it is not our symlink."""
        if not self.dags_folder.is_symlink():
            return None
        target = Path(os.readlink(self.dags_folder))
        if not target.is_absolute():
            target = self.dags_folder.parent / target
        if os.path.abspath(target.parent) != os.path.abspath(self.releases_dir):
            return None
        return target.name if target.is_dir() else None


def lock(layout: Layout) -> int:
    """An exclusive flock on the releases directory (file descriptor to close), or exit code 75."""
    import fcntl

    fd = os.open(layout.releases_dir / "lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SyncError("another sync is running on this folder", EXIT_DEPLOY_IN_PROGRESS) from exc
    return fd


def load_state(layout: Layout, source: str, release: str | None) -> dict[str, Any] | None:
    """The recorded state, only if it describes the release in place for the same source."""
    if release is None:
        return None
    try:
        state = json.loads(layout.state_path.read_bytes())
    except (OSError, ValueError):
        return None
    if state.get("format") != STATE_FORMAT or state.get("source") != source or state.get("release") != release:
        return None
    return state


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    tmp = layout.state_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, separators=(",", ":")))
    os.replace(tmp, layout.state_path)


def new_release_name() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.time_ns() % 1_000_000_000:09d}"


def link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _renameat2_exchange(src: Path, dst: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_exchange)
    return result == 0


def switch_symlink(layout: Layout, release: str, initial_release: str) -> None:
    """Point DAGS_FOLDER at the release with one rename(2); a real directory becomes a release."""
    folder = layout.dags_folder
    tmp_link = folder.parent / f".{folder.name}.switch-{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(layout.link_target(release), tmp_link)
    if folder.is_dir() and not folder.is_symlink():
        # First run: the image shipped a real directory. Swap it with the symlink atomically, then
        # keep it as the previous release (rollback target).
        if _renameat2_exchange(tmp_link, folder):
            shutil.move(tmp_link, layout.releases_dir / initial_release)
            return
        try:
            # No renameat2 (other kernel/filesystem): a window of microseconds without the folder.
            os.rename(folder, layout.releases_dir / initial_release)
        except OSError as exc:
            _replace_unmovable_directory(folder, layout.releases_dir / initial_release, exc)
    os.replace(tmp_link, folder)


def _replace_unmovable_directory(folder: Path, keep_as: Path, error: OSError) -> None:
    """Copy, then delete a DAG folder that cannot be renamed, so the symlink can take its place.

    Happens once, on the first sync: e.g. a directory of a lower image layer on overlayfs (rename
    gives EXDEV). Not atomic, which is why the images run a first sync before the dag-processor
    starts. A mount point cannot be deleted: that configuration is refused with a message.
    """
    if os.path.ismount(folder):
        raise SyncError(
            f"{folder} is a mount point: it cannot become a symlink to a release. Mount the volume on its "
            "parent (or elsewhere) and point AIRFLOW__CORE__DAGS_FOLDER below it.",
            EXIT_CONFIG,
        ) from error
    print(f"dags sync: first run, {folder} cannot be renamed ({error.strerror}): converted by copy", file=sys.stderr)
    shutil.copytree(folder, keep_as, symlinks=True)
    shutil.rmtree(folder)


def prune_releases(layout: Layout, keep: Iterable[str]) -> None:
    kept = set(keep)
    for entry in layout.releases_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)

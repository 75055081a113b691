"""Object keys: which may become files under the DAG folder, which nobody mirrors, content hashes."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

MANIFEST_NAME = ".deploy-manifest.json"
# Files of the local image that a sync never overwrites nor deletes and a deploy never ships
# (relative to the DAG folder).
DEFAULT_PROTECTED = ("download_dags.py", ".env", ".env.template", "sync_dags.sh")
# Directories never mirrored: Python caches are rebuilt locally.
SKIPPED_DIR_NAMES = frozenset({"__pycache__"})

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def key_problem(rel: str) -> str | None:
    """Why a key (relative to the prefix) may not become a file under DAGS_FOLDER, or None."""
    if not rel:
        return "empty name"
    if "\\" in rel:
        return "backslash in name"
    if "\x00" in rel or any(ord(c) < 32 for c in rel):
        return "control character in name"
    if rel.startswith("/"):
        return "absolute path"
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'..', '.' or empty path segment (would escape or alias the folder)"
    if re.match(r"^[A-Za-z]:", rel):
        return "drive letter"
    return None


def is_skipped(rel: str) -> bool:
    """Keys mirrored by nobody: directory markers, Python caches, the manifest itself."""
    if rel == MANIFEST_NAME or rel.endswith("/"):
        return True
    parts = PurePosixPath(rel).parts
    return any(part in SKIPPED_DIR_NAMES for part in parts[:-1]) or rel.endswith(".pyc")


def walk_files(root: Path) -> Iterable[str]:
    """Relative POSIX paths of the regular files below root (following the root symlink)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIR_NAMES]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
            if not rel.endswith(".pyc"):
                yield rel


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def clean_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


def plain_md5(etag: str | None) -> str | None:
    """The MD5 an ETag stands for, when it is one (not multipart, not SSE-KMS)."""
    if not etag:
        return None
    etag = etag.strip('"').lower()
    return etag if _MD5_RE.match(etag) else None

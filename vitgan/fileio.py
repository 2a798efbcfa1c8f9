"""Writing files so that a crash never leaves a half-written file in place of a good one (with the permissions any
other file gets), and reading JSON-lines records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"  # temporary files are `.<name>.tmp<pid><suffix>` beside their target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_name(path: Path, pid: int | None = None) -> Path:
    """The hidden temporary file `atomic_write` writes before renaming it to `path`."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid() if pid is None else pid}{path.suffix}")


def atomic_write(path: Path, write: Callable[[Path], None], *,
                 before_replace: Callable[[Path], None] | None = None) -> None:
    """Call write(tmp) for a temporary file beside `path`, fsync it, then rename it to `path`.

    `before_replace(tmp)` runs after the fsync and before the rename (e.g. to record the complete file's checksum).
    On any error, and on Ctrl-C, the temporary file is removed and `path` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)  # keep the suffix: writers infer formats
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would: some writers (safetensors) create their files 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder's entry table (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files in `folder` left by writers that no longer run (killed before their rename)."""
    stale = []
    for tmp in folder.glob(f".*{TMP_MARK}*"):
        digits = tmp.name.rpartition(TMP_MARK)[2].split(".")[0]
        if digits.isdigit() and not _alive(int(digits)):
            stale.append(tmp)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (`stats.jsonl`, `metrics.jsonl`, a benchmark's record), [] if it does not exist;
    a line cut short by a crash, or blank, is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows

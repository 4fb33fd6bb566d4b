"""Atomic file writes: a temp file in the same folder, flushed, then renamed over the target.

A reader never sees a half-written file, and a crash leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


def file_mode() -> int:
    """The mode a new file gets from the process umask (``0o666 & ~umask``), as ``open`` gives
    it; read from ``/proc/self/status`` where it says, else by setting and restoring the umask
    once.

    Examples
    --------
    >>> file_mode() & 0o600
    384
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path`` for binary writing; rename it over ``path`` on success.

    The file gets the mode a plain ``open`` would give it (:func:`file_mode`), not the
    owner-only mode of a temp file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    with contextlib.suppress(OSError):
        os.fchmod(fd, file_mode())
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: The name ``atomic_open`` gives its temp file: ``.<target name>.<8 random characters>.tmp``.
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def remove_stale_temps(folder: str | os.PathLike, *, prefix: str = "") -> list[Path]:
    """Delete the temp files that :func:`atomic_open` left in ``folder`` when its process was
    killed (a clean exit or an exception removes them itself); return what was deleted.

    Only temp files of targets whose name starts with ``prefix`` are touched (all when empty).
    Call it only where no other process is writing the same targets at the same time, e.g. when
    a run resumes or a checkpoint is saved again.

    Examples
    --------
    >>> remove_stale_temps("runs/a", prefix="last.")  # doctest: +SKIP
    [PosixPath('runs/a/.last.safetensors.k2j4x_9a.tmp')]
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for path in root.glob(".*.tmp"):
        if _TEMP_NAME.fullmatch(path.name) and path.name[1:].startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_csv(
    path: str | os.PathLike, rows: Sequence[dict[str, Any]], fields: Sequence[str]
) -> None:
    """Write ``rows`` (dicts) as CSV with the given columns, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV file into a list of dicts (all values are strings)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def markdown_table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    align: str | None = None,
) -> str:
    """A Markdown (GitHub) table as text, one line per row, without a trailing newline.

    Cells are written with ``str``; ``None`` becomes an en dash, ``|`` is escaped and newlines
    become spaces. ``align`` holds one letter per column: ``l`` left, ``r`` right, ``c`` centre,
    ``-`` unspecified (default: every column unspecified).

    Examples
    --------
    >>> print(markdown_table(["set", "n"], [["IDC", 7488], ["a|b", None]], align="lr"))
    | set | n |
    | :--- | ---: |
    | IDC | 7488 |
    | a\\|b | – |
    """
    width = len(header)
    align = align or "-" * width
    if len(align) != width:
        raise ValueError(f"align has {len(align)} letters for {width} columns")
    marks = {"l": ":---", "r": "---:", "c": ":---:", "-": "---"}
    lines = [_markdown_row(header), "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += [_markdown_row(row) for row in rows]
    return "\n".join(lines)


def _markdown_row(cells: Sequence[Any]) -> str:
    text = ("–" if c is None else str(c).replace("|", "\\|").replace("\n", " ") for c in cells)
    return "| " + " | ".join(text) + " |"

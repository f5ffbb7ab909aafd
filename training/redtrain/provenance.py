"""Where an artefact came from, and writing it so that a crash never leaves half a file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable


def git_commit() -> str:
    """The commit that produced an artefact, with '-dirty' when the tree had uncommitted changes."""
    # Only training/ is checked for changes: other parts of the tree (the service) do not affect
    # the numbers, and someone working on them must not make every package look dirty.
    try:
        root = Path(__file__).resolve().parents[2]
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "training"], cwd=root,
                               capture_output=True, text=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Have `write` fill a sibling of `path`, then rename it over `path`: readers see the old file
    or the new one. The sibling's name holds this process's id, so two processes writing the same
    file (two study runs) never share one; it keeps `path`'s suffix, so writers that go by the
    suffix (matplotlib's savefig) write the same format."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def staging_folder(out: Path) -> Path:
    """An empty sibling of `out` (this process's own) to build a package in before replace_folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def replace_folder(tmp: Path, out: Path) -> None:
    """Put a finished folder in place of `out` (which may not exist): the old folder is renamed
    aside first and deleted last, so `out` is never a half-written folder."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)

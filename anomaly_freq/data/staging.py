"""Build a folder of derived data so that it is either complete or absent.

The content is written into a temporary sibling folder, a marker file is added, and the folder
is renamed into place; an interrupted build never leaves a tree that looks finished, and a
finished one is reused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

MARKER = ".complete"


def build_once(target: Path, build: Callable[[Path], None], note: str = "complete") -> Path:
    """Return ``target``, running ``build(staging_folder)`` first unless it is already complete."""
    if (target / MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        build(staging)
        (staging / MARKER).write_text(note + "\n")
        if (target / MARKER).exists():  # another process finished first: keep theirs
            shutil.rmtree(staging)
            return target
        shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover of an older attempt
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / MARKER).exists():
            raise
        # another process completed the same folder first: use theirs
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

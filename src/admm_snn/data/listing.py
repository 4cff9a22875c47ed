"""What a folder holds, for error messages that say where the data was looked for."""

from __future__ import annotations

from pathlib import Path


def folder_listing(folder: Path, limit: int = 6) -> str:
    """The first ``limit`` entries of ``folder`` (folders with a trailing /), sorted, and how many there are."""
    try:
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "nothing"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more

"""Named pause points for crash tests: make ``kill -9`` land at a precise moment of a write.

The reliability tests kill the CLI in the middle of an import, the writing of latents, a tag decision
and an export. Killing at a random time mostly hits start-up or the end, so each of those writes calls
``pause_point(name)`` at its most delicate moment (inside the open transaction, or with the export's
temporary file half written). It does nothing unless ``MMAE_FAULT_PAUSE`` names that point: then it
writes the file ``MMAE_FAULT_MARKER`` (so the test knows the moment has come) and sleeps until killed.
Behaviour is otherwise unchanged, and no user setting reaches it.
"""
from __future__ import annotations

import os
import time

POINTS = ("import", "features", "latents", "decision", "export")


def pause_point(name: str) -> None:
    """Pause here for ever when ``MMAE_FAULT_PAUSE == name`` (tests only); otherwise return at once."""
    if os.environ.get("MMAE_FAULT_PAUSE") != name:
        return
    marker = os.environ.get("MMAE_FAULT_MARKER")
    if marker:
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {name}\n")
    while True:  # the test kills us here
        time.sleep(1.0)

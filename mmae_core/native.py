"""The compiled training step of the default thread plan, built once per install.

Why: the default plan ("modalities") runs groups of modalities on their own threads. In Python
every kernel call releases and re-takes the GIL, and on 2 cores those hand-offs cost about 40 % of a
step (measured: 0.72–0.79 s per demo epoch against 0.43–0.47 s in C++). ``csrc/group_step.cpp`` is the same
step, op for op, so it gives the same bits: a model does not depend on whether this module could
be built. When it cannot (no C++ compiler, or ``MMAE_NATIVE=0``), training uses the Python step.

It is built by ``scripts/install.sh`` (``python -m mmae_core.native``), about 30 s, into
``<venv>/mmae_native`` (``MMAE_NATIVE_DIR`` overrides). If a process finds no current build, it
builds it once itself and says so on stderr.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

SOURCE = Path(__file__).with_name("csrc") / "group_step.cpp"
NAME = "mmae_group_step"

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None


def build_dir() -> Path:
    """Where the extension is compiled: inside the environment, so it goes with the venv."""
    env = os.environ.get("MMAE_NATIVE_DIR")
    if env:
        return Path(env)
    base = Path(sys.prefix)
    if not os.access(base, os.W_OK):
        base = Path(tempfile.gettempdir())
    return base / "mmae_native"


def enabled() -> bool:
    return os.environ.get("MMAE_NATIVE", "1") != "0"


def _built(folder: Path) -> bool:
    """A build newer than the source exists (torch rebuilds a stale one, which takes as long)."""
    src = SOURCE.stat().st_mtime
    return any(so.stat().st_mtime >= src for so in folder.glob(f"{NAME}*.so"))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load(announce: bool = True, say: Callable[[str], None] | None = None) -> ModuleType | None:
    """The extension module, built if needed; ``None`` (and ``error()`` says why) if it cannot be.

    One attempt per process: a failed build is not retried on every training run. ``say`` hears the
    build's announcement and the fallback note (default: stderr); a training job passes its log, so
    a curator sees in the dashboard why training waits or runs slower, and every later job of the
    same server is told the note again."""
    global _module, _error
    if not enabled():
        return None
    with _lock:
        folder = build_dir()
        if _module is not None or _error is not None:
            if _error is not None and say is not None:
                say(_fallback_note(folder))
            return _module
        say = say or _stderr
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if announce and not _built(folder):
                say("building the native training step once (about 30 s) ...")
            _find_ninja()
            from torch.utils.cpp_extension import load as torch_load

            with _build_lock(folder, say):
                _module = torch_load(NAME, [str(SOURCE)], extra_cflags=["-O2"], build_directory=str(folder), verbose=False)
        except Exception as exc:  # a missing compiler or ninja, a failed build: fall back, say why once
            _error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}"
            say(_fallback_note(folder))
        return _module


def _fallback_note(folder: Path) -> str:
    return (f"note: the native training step is not available ({_error}); training uses the Python step "
            f"(same results, slower); to rebuild it, delete {folder}.")


@contextmanager
def _build_lock(folder: Path, say: Callable[[str], None] = _stderr) -> Iterator[None]:
    """One process at a time builds or checks the extension, and a killed build cannot block the rest.

    Why: torch's own lock is a file that it deletes when done (``FileBaton``), and every ``load``
    takes it, even when the build is current. A process killed while holding it (the terminal
    closed during the install's compile, ``kill -9``, a power cut) leaves the file behind, and every
    later training would wait for it forever, silently. An ``flock`` is released by the system when
    its process dies, so while we hold ours, a torch lock file in the folder is a leftover."""
    try:
        import fcntl
    except ImportError:  # no flock on this system: torch's lock alone
        yield
        return
    with open(folder / "build.flock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another process that is building the native training step ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        leftover = folder / "lock"
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            say("note: removed the lock of an interrupted build of the native training step")
        yield  # the flock goes with the file's close


def _find_ninja() -> None:
    """torch builds with the ``ninja`` on PATH; an unactivated venv's own (the pinned PyPI package)
    is not on it."""
    if shutil.which("ninja"):
        return
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([str(ninja.BIN_DIR), os.environ.get("PATH", "")])


def error() -> str | None:
    """Why ``load()`` returned ``None`` (after it did), else ``None``."""
    return _error


def main() -> int:
    """``python -m mmae_core.native``: build (or check) the extension; exit 1 if it cannot be built."""
    mod = load(announce=True)
    if mod is None:
        print(f"native training step: not built ({_error or 'disabled by MMAE_NATIVE=0'})", file=sys.stderr)
        return 1
    print(f"native training step: ready in {build_dir()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The compiled step of the default thread plan (mmae_core/native.py, csrc/group_step.cpp).

It must give exactly the Python step's bits, so a model never depends on whether the extension
could be built; and training must still work, with a note, when it cannot."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmae_core import native
from mmae_core.model import MMAE
from mmae_core.train import _Batch, _NativeStepper, _Stepper, encode, train
from tests.test_train import CFG, DIMS, make_set

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ext():
    mod = native.load()
    assert mod is not None, f"the native training step did not build: {native.error()} (scripts/install.sh builds it; it needs a C++ compiler)"
    return mod


def _pair(hidden: tuple[int, ...], groups: list[list[int]], align: float, wd: float, ext) -> tuple[MMAE, _Stepper, MMAE, _NativeStepper]:
    torch.manual_seed(0)
    a = MMAE(DIMS, latent=8, hidden=hidden)
    b = MMAE(DIMS, latent=8, hidden=hidden)
    b.load_state_dict(a.state_dict())
    return a, _Stepper(a, groups, lr=1e-2, align_weight=align, weight_decay=wd), b, _NativeStepper(ext, b, groups, lr=1e-2, align_weight=align, weight_decay=wd)


def _assert_same_state_and_close(a: MMAE, py: _Stepper, b: MMAE, nat: _NativeStepper) -> None:
    """Weights, gradients and BatchNorm running statistics equal bit for bit; then both closed."""
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q) and torch.equal(p.grad, q.grad), name
    for (name, p), q in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(p, q), name
    py.close()
    nat.close()


@pytest.mark.parametrize(
    "hidden,groups,align,wd",
    [
        ((32, 16), [[1], [0, 2]], 0.0, 0.0),  # the demo's plan on 2 cores, the paper preset
        ((16,), [[0], [1], [2]], 0.5, 0.3),  # three threads, alignment term, AdamW
        ((16, 12, 8), [[0, 1, 2]], 0.0, 0.0),  # one group (no worker thread), deeper stacks
    ],
)
def test_native_step_gives_the_python_steps_bits(ext, hidden, groups, align, wd) -> None:
    rng = np.random.default_rng(5)
    x = {m: torch.from_numpy(rng.normal(size=(70, d)).astype(np.float32)) for m, d in DIMS.items()}
    every = {m: None for m in DIMS}
    a, py, b, nat = _pair(hidden, groups, align, wd, ext)
    # full batches, a short last batch and a lone row (running statistics instead of batch ones)
    for rows in (slice(0, 32), slice(32, 64), slice(64, 69), slice(69, 70), slice(0, 32)):
        batch = {m: v[rows].clone() for m, v in x.items()}
        want = py(_Batch({m: v.clone() for m, v in batch.items()}, every, every, None))
        got = nat(_Batch(batch, every, every, None))
        assert torch.equal(got, want), (rows, got, want)
    _assert_same_state_and_close(a, py, b, nat)
    assert all(q.grad is None for q in b.parameters())


def test_native_step_gives_the_python_steps_bits_with_gaps_dropout_and_alignment(ext) -> None:
    """The aligned preset's batches: missing rows, modality dropout (rows per modality, 1/count
    fusion), a modality nobody in the batch has, and a group whose first modality is complete."""
    from mmae_core.train import _inv_count, _rows, dropout_mask

    rng = np.random.default_rng(9)
    names, cpu = list(DIMS), torch.device("cpu")
    a, py, b, nat = _pair((16, 12), [[1], [0, 2]], 0.3, 0.3, ext)
    gen = torch.Generator().manual_seed(0)
    for case in range(6):
        n = 48
        present = rng.random((n, 3)) < 0.7
        present[~present.any(axis=1), 0] = True
        if case == 1:
            present[:, 0] = True  # image in every row, text with gaps: image's h must stay intact
        if case == 2:
            present[:, 2] = False  # nobody has text
            present[:, 0] = True
        enc = dropout_mask(present, 0.5 if case != 1 else 0.0, gen)
        x = {m: torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)) for m, d in DIMS.items()}
        for j, m in enumerate(names):
            x[m][~present[:, j]] = 0.0

        def batch() -> _Batch:
            return _Batch({m: v.clone() for m, v in x.items()}, _rows(enc, names, cpu), _rows(present, names, cpu), _inv_count(enc, cpu))

        want, got = py(batch()), nat(batch())
        assert torch.equal(got, want), (case, got, want)
    _assert_same_state_and_close(a, py, b, nat)


def test_a_failing_op_in_any_thread_raises_instead_of_hanging(ext) -> None:
    a, py, b, nat = _pair((16,), [[1], [0, 2]], 0.0, 0.0, ext)
    good = {m: torch.zeros(8, d) for m, d in DIMS.items()}
    every = {m: None for m in DIMS}
    for bad_modality in ("audio", "text"):  # audio runs on this thread, text on the worker
        bad = dict(good, **{bad_modality: torch.zeros(8, DIMS[bad_modality] + 1)})
        with pytest.raises(RuntimeError):
            nat(_Batch(bad, every, every, None))
    assert torch.isfinite(nat(_Batch(good, every, every, None))).all()  # the threads still serve
    py.close()
    nat.close()


def test_training_uses_it_and_gives_the_python_steps_latents(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmae_core.train as train_mod

    monkeypatch.setattr(train_mod, "cpu_cores", lambda: 2)  # the plan the CI machine (2 cores) gets
    complete = make_set(200, missing=False, name="complete")
    fast = train(complete, CFG)
    assert fast.plan.endswith(", native step") and "audio | image+text on 2 thread(s)" in fast.plan
    monkeypatch.setenv("MMAE_NATIVE", "0")
    slow = train(complete, CFG)
    assert slow.plan == fast.plan.removesuffix(", native step")
    za, _ = encode(fast, complete.splits["train"].features)
    zb, _ = encode(slow, complete.splits["train"].features)
    assert np.array_equal(za, zb)
    assert [h["losses"] for h in fast.history] == [h["losses"] for h in slow.history]
    # items with gaps, modality dropout and alignment (the aligned preset's case): the same too
    gaps = make_set(200)
    aligned = replace(CFG, modality_dropout=0.5, align_weight=0.3, weight_decay=0.3)
    slow = train(gaps, aligned)
    monkeypatch.delenv("MMAE_NATIVE")
    fast = train(gaps, aligned)
    assert fast.plan.endswith(", native step") and not slow.plan.endswith(", native step")
    za, _ = encode(fast, gaps.splits["train"].features)
    zb, _ = encode(slow, gaps.splits["train"].features)
    assert np.array_equal(za, zb) and fast.history[-1]["losses"]["align"] > 0


def _run_without_a_compiler(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh process whose build of the extension must fail (no such compiler)."""
    env = dict(os.environ, MMAE_NATIVE_DIR=str(tmp_path / "build"), CXX=str(tmp_path / "no-such-compiler"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def test_without_a_compiler_training_falls_back_with_one_note(tmp_path: Path) -> None:
    """A machine that cannot build the extension still trains, with the same results."""
    code = (
        "from tests.test_train import CFG, make_set\n"
        "import mmae_core.train as t\n"
        "t.cpu_cores = lambda: 2\n"
        "tm = t.train(make_set(120, missing=False), CFG)\n"
        "print(tm.plan)\n"
    )
    out = _run_without_a_compiler(code, tmp_path)
    assert out.stdout.strip() == "audio | image+text on 2 thread(s), 1 intra-op thread(s) each"
    notes = [line for line in out.stderr.splitlines() if line.startswith("note: the native training step is not available")]
    assert len(notes) == 1 and "training uses the Python step (same results, slower)" in notes[0], out.stderr
    assert notes[0].endswith(f"to rebuild it, delete {tmp_path / 'build'}."), out.stderr


def test_switched_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAE_NATIVE", "0")
    assert native.load() is None


def test_a_lock_left_by_a_killed_build_does_not_hang_training(tmp_path: Path) -> None:
    """torch's build lock is a file; a build killed midway (the terminal closed during the install)
    leaves it, and without our flock every later training waited for it forever."""
    import shutil

    assert native.load() is not None
    build = tmp_path / "build"
    shutil.copytree(native.build_dir(), build, ignore=shutil.ignore_patterns("lock", "build.flock"))
    (build / "lock").touch()  # what a killed build leaves
    code = "from mmae_core import native\nprint(native.load() is not None)\n"
    env = dict(os.environ, MMAE_NATIVE_DIR=str(build), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    assert "removed the lock of an interrupted build" in out.stderr and not (build / "lock").exists()


def test_a_second_process_waits_for_the_build_lock_then_loads(tmp_path: Path) -> None:
    """Two processes starting at once (the dashboard and a CLI run): one builds or checks, the
    other says it waits, then loads the same build."""
    import fcntl
    import shutil

    assert native.load() is not None
    build = tmp_path / "build"
    shutil.copytree(native.build_dir(), build, ignore=shutil.ignore_patterns("lock", "build.flock"))
    code = "from mmae_core import native\nprint(native.load() is not None)\n"
    env = dict(os.environ, MMAE_NATIVE_DIR=str(build), PYTHONPATH=str(ROOT))
    with open(build / "build.flock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a process in the middle of a build holds it
        p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        seen = []
        for line in p.stderr:  # ends at the process's exit if it never waits
            seen.append(line)
            if line.startswith("waiting for another process"):
                break
        assert seen and seen[-1].startswith("waiting for another process"), "".join(seen)
        assert p.poll() is None  # blocked on the lock, not finished
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0 and out.strip() == "True", "".join(seen) + err


def test_a_dashboard_job_shows_why_training_runs_without_the_native_step(tmp_path: Path) -> None:
    """The curator sees the fallback note in the job panel's notes, not only on the server's stderr."""
    code = (
        "import json, sys\n"
        "import mmae_core.train as t\n"
        "t.cpu_cores = lambda: 2\n"
        "from mmae_core.config import preset\n"
        "from mmae_core.demo import make_demo\n"
        "from mmae_core.jobs import JobManager\n"
        "from store import Store\n"
        f"store = Store({str(tmp_path / 'jobs.duckdb')!r})\n"
        "store.add_dataset(make_demo(scale=0.03))\n"
        "mgr = JobManager(store, throttle_s=0.0)\n"
        "views = [mgr.wait(mgr.start_training('demo', preset('paper', epochs=1), m), timeout=240) for m in ('m', 'n')]\n"
        "print(json.dumps([{'status': v.status, 'notes': store.job(v.id)['progress'].get('notes', [])} for v in views]))\n"
    )
    out = _run_without_a_compiler(code, tmp_path)
    jobs = json.loads(out.stdout.strip().splitlines()[-1])
    for got in jobs:  # the second job of the same server is told too (the build is tried once per process)
        assert got["status"] == "done", got
        assert sum(n.startswith("the native training step is not available") for n in got["notes"]) == 1, got
    assert "the native training step is not available" not in out.stderr  # said where the curator looks instead

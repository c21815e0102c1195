"""The benchmarks (benchmarks/*.py) run as documented: ``.venv/bin/python benchmarks/X.py``.

Two quick checks, for every file in benchmarks/: its name shadows no module (Python puts a script's
folder first on ``sys.path``, so a ``benchmarks/notices.py`` made ``import notices`` load itself and
broke every benchmark beside it), and it starts from another working directory (``--help``: every
import done, the siblings' included). Then each benchmark's ``--smoke`` (e2e: they start daemons,
PostgreSQL clusters, Asterisk; one process, after the quick loop): it must finish and print its
table. No time is asserted: the figures of a smoke run are not measurements (docs/voice.md,
docs/notices.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py"))

#: benchmark -> a line of the table its --smoke ends with, and the markers of what it starts
SMOKES = {
    "agi": ("| target | measured | |", ()),  # ivr serve, the bare responder, classic ivr agi
    "multinode": ("| | sqlite, 1 daemon | postgres, 1 daemon |", (pytest.mark.postgres,)),
    "notice_mail": ("| database, workers | mails | queued in |", (pytest.mark.postgres,)),
    "calls": ("completed / failed", (pytest.mark.lab,)),  # the lab's Asterisk, SIPp, the stack
}


def _environment() -> dict[str, str]:
    """The caller's environment without its IVR_ settings: each benchmark sets its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}


def test_every_benchmark_is_smoked() -> None:
    helpers = {"agi_bare", "agi_peer"}  # run by benchmarks/agi.py, not on their own
    assert set(SCRIPTS) - helpers == set(SMOKES)


def test_no_benchmark_name_shadows_a_module(tmp_path: Path) -> None:
    """Looked up in a fresh interpreter outside the checkout, as a script's own import would be;
    ``notices`` (the package the old benchmarks/notices.py shadowed) shows that the lookup finds."""
    probe = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([n for n in json.loads(sys.argv[1]) if n in sys.stdlib_module_names "
        "or n in sys.builtin_module_names or importlib.util.find_spec(n) is not None]))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe, json.dumps([*SCRIPTS, "notices"])],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(found.stdout) == ["notices"], "a benchmark named like a module shadows it: rename it"


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n != "agi_peer"])  # agi_peer is a module only
def test_each_benchmark_starts_from_another_directory(name: str, tmp_path: Path) -> None:
    started = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    assert "usage:" in started.stdout


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=marks) for name, (_, marks) in SMOKES.items()], ids=list(SMOKES)
)
def test_smoke(name: str) -> None:
    """``.venv/bin/python benchmarks/X.py --smoke`` from the repository's root, as documented."""
    header, _ = SMOKES[name]
    ran = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--smoke"],
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert ran.returncode == 0, f"rc {ran.returncode}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    assert header in ran.stdout, ran.stdout[-3000:]

"""The prompts: every id the call flow plays has a file, and each file is speech of plausible length."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from ivr.assets import PROMPT_CATALOG
from ivr.lab import PROMPT_IDS, Lab
from ivr.lab.prompts import load_catalog, prompt_file
from stack.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
KEBAB = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)+$")
FLOW_DIRS = [REPO / "ivr" / "flow"]


def _sox_stat(path: Path) -> dict[str, float]:
    out = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True, check=True).stderr
    stats = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        try:
            stats[name.strip()] = float(value.strip())
        except ValueError:
            continue
    return stats


def _soxi(path: Path, flag: str) -> str:
    return subprocess.run(
        ["soxi", flag, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def prompt_ids_in_flow_code() -> set[str]:
    """Kebab-case string literals of the call flow's code: the prompt ids it plays."""
    found: set[str] = set()
    for directory in FLOW_DIRS:
        for path in directory.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and KEBAB.match(node.value):
                    found.add(node.value)
    return found


def test_catalog_has_every_contract_prompt_id() -> None:
    catalog = load_catalog()
    assert set(PROMPT_IDS) <= set(catalog.prompts), set(PROMPT_IDS) - set(catalog.prompts)
    assert {f"digit-{d}" for d in range(10)} <= set(catalog.prompts)


def test_every_prompt_id_in_the_flow_code_is_in_the_catalog() -> None:
    used = prompt_ids_in_flow_code()
    missing = used - set(load_catalog().prompts)
    assert not missing, f"prompt ids used by ivr/flow without a catalog entry: {sorted(missing)}"


@pytest.fixture(scope="module")
def sounds_dir() -> Path:
    lab = Lab(load_settings())
    return lab.build().prompts.sounds_dir


@pytest.mark.lab
def test_every_prompt_has_a_file_of_plausible_speech(sounds_dir: Path) -> None:
    catalog = load_catalog()
    ids = set(PROMPT_IDS) | set(catalog.prompts) | prompt_ids_in_flow_code()
    problems = []
    for prompt_id in sorted(ids):
        path = prompt_file(sounds_dir, prompt_id)
        if not path.is_file():
            problems.append(f"{prompt_id}: no file {path}")
            continue
        if (_soxi(path, "-r"), _soxi(path, "-c"), _soxi(path, "-b")) != ("8000", "1", "16"):
            problems.append(f"{prompt_id}: not 8 kHz mono 16-bit")
        stats = _sox_stat(path)
        length = stats["Length (seconds)"]
        prompt = catalog.prompts[prompt_id]
        if prompt.silence is not None:
            if not (0 < length <= 1.0 and stats["Maximum amplitude"] < 0.01):
                problems.append(f"{prompt_id}: expected a short silence, got {length:.2f} s")
            continue
        chars = len(prompt.speech)
        # Japanese speech runs at roughly 6-10 characters a second; allow a wide margin.
        low, high = (0.2, 1.5) if prompt_id.startswith("digit-") else (chars * 0.05, chars * 0.3 + 1.0)
        if not low <= length <= high:
            problems.append(
                f"{prompt_id}: {length:.2f} s for {chars} characters (expected {low:.1f}-{high:.1f})"
            )
        if stats["RMS     amplitude"] < 0.02:
            problems.append(f"{prompt_id}: too quiet to be speech (RMS {stats['RMS     amplitude']:.3f})")
    assert not problems, "\n".join(problems)


@pytest.mark.lab
def test_changed_text_builds_a_new_prompt_set(sounds_dir: Path, tmp_path: Path) -> None:
    from ivr.lab.prompts import sounds_dir_for

    catalog = load_catalog()
    lab = Lab(load_settings())
    changed_text = PROMPT_CATALOG.read_text(encoding="utf-8").replace(
        'ご利用ありがとうございました。"\n', 'ご利用、ありがとうございました。"\n'
    )
    changed_path = tmp_path / "catalog.toml"
    changed_path.write_text(changed_text, encoding="utf-8")
    changed = load_catalog(changed_path)
    assert changed.key != catalog.key
    assert sounds_dir_for(lab.cache_dir, changed, lab.recipe.key) != sounds_dir
    assert sounds_dir_for(lab.cache_dir, catalog, lab.recipe.key) == sounds_dir

"""The voice prompts: a catalog of ids and Japanese texts, built into 8 kHz mono wav files.

``prompts/catalog.toml`` (package data, `ivr.assets.PROMPT_CATALOG`) maps each id to its text.
``build_prompts`` speaks every text with Open JTalk inside the lab's root filesystem, converts it
with sox to 8 kHz mono 16-bit and writes ``<sounds>/ja/ivr/<id>.wav``. The sounds directory is
cached under the hash of the catalog's texts and of the root filesystem, so a changed text (or a
new speech engine) builds a new set and an unchanged one is reused at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path

from ivr.assets import PROMPT_CATALOG

PROMPT_RECIPE_VERSION = 1
LANGUAGE = "ja"
DICTIONARY = "/var/lib/mecab/dic/open-jtalk/naist-jdic"
VOICE = "/usr/share/hts-voice/nitech-jp-atr503-m001/nitech_jp_atr503_m001.htsvoice"

DIGIT_PROMPT_IDS: tuple[str, ...] = tuple(f"digit-{d}" for d in range(10))

#: Every prompt id the call flow plays (docs/architecture.md); the catalog has each.
PROMPT_IDS: tuple[str, ...] = (
    "choose-unit",
    "enter-number",
    "wrong-entry",
    "set-for-number-prefix",
    "set-for-number-suffix",
    "confirm-password",
    "completed-suffix",
    "too-many-wrong",
    "caller-id-withheld",
    "caller-not-eligible",
    "system-error",
    "busy",
    "goodbye",
    "password-guessable",
    "please-wait",
    "saving-please-wait",
    *DIGIT_PROMPT_IDS,
)

#: The directory (under the sounds directory) of the music-on-hold classes that play while the
#: daemon waits (musiconhold.conf: ``directory=sounds/ivr-progress``); it holds the tones.
PROGRESS_DIRECTORY = "ivr-progress"


class PromptError(RuntimeError):
    """The prompts could not be built."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    speech: str  # what the speech engine is given
    silence: float | None = None  # seconds of silence instead of speech


@dataclass(frozen=True)
class Tone:
    """A soft tone: `on` seconds of a sine at `frequency`, `off` seconds quiet, for `seconds`."""

    id: str
    frequency: float
    on: float
    off: float
    seconds: float
    volume_db: float

    def sox_effects(self) -> str:
        fade = min(0.02, self.on / 4)
        repeats = max(0, round(self.seconds / (self.on + self.off)) - 1)
        return (
            f"synth {self.on:.3f} sine {self.frequency:g} fade q {fade:.3f} {self.on:.3f} {fade:.3f} "
            f"gain {self.volume_db:g} pad 0 {self.off:.3f} repeat {repeats}"
        )


@dataclass(frozen=True)
class Catalog:
    prompts: dict[str, Prompt]
    tones: dict[str, Tone] = field(default_factory=dict)
    speed: float = 1.0
    volume_db: float = 0.0
    sample_rate: int = 8000

    @property
    def key(self) -> str:
        payload = {
            "recipe": PROMPT_RECIPE_VERSION,
            "voice": [self.speed, self.volume_db, self.sample_rate],
            "prompts": {p.id: [p.speech, p.silence] for p in self.prompts.values()},
            "tones": {t.id: t.sox_effects() for t in self.tones.values()},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[
            :16
        ]


@dataclass(frozen=True)
class PromptsReport:
    sounds_dir: Path  # contains ja/ivr/<id>.wav
    built: bool
    seconds: float
    count: int


def load_catalog(path: Traversable = PROMPT_CATALOG) -> Catalog:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PromptError(f"cannot read prompt catalog {path}: {exc}") from exc
    voice = data.get("voice", {})
    prompts: dict[str, Prompt] = {}
    for prompt_id, entry in data.get("prompts", {}).items():
        if not isinstance(entry, dict):
            raise PromptError(f"{path}: prompts.{prompt_id} must be a table")
        text = str(entry.get("text", ""))
        silence = entry.get("silence")
        speech = str(entry.get("speech", text)).strip()
        if silence is None and not speech:
            raise PromptError(f"{path}: prompts.{prompt_id} has neither text nor silence")
        if any(c in prompt_id for c in "/. \\") or not prompt_id:
            raise PromptError(f"{path}: bad prompt id {prompt_id!r}")
        prompts[prompt_id] = Prompt(prompt_id, text, speech, float(silence) if silence is not None else None)
    tones: dict[str, Tone] = {}
    for tone_id, entry in data.get("tones", {}).items():
        if not isinstance(entry, dict) or any(c in tone_id for c in "/. \\") or not tone_id:
            raise PromptError(f"{path}: bad tone {tone_id!r}")
        try:
            tones[tone_id] = Tone(
                tone_id,
                frequency=float(entry["frequency"]),
                on=float(entry["on"]),
                off=float(entry["off"]),
                seconds=float(entry["seconds"]),
                volume_db=float(entry.get("volume_db", -18.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PromptError(f"{path}: tones.{tone_id} needs frequency, on, off and seconds") from exc
        if min(tones[tone_id].frequency, tones[tone_id].on, tones[tone_id].seconds) <= 0:
            raise PromptError(f"{path}: tones.{tone_id} must have positive frequency, on and seconds")
    return Catalog(
        prompts=prompts,
        tones=tones,
        speed=float(voice.get("speed", 1.0)),
        volume_db=float(voice.get("volume_db", 0.0)),
        sample_rate=int(voice.get("sample_rate", 8000)),
    )


def sounds_dir_for(cache_dir: Path, catalog: Catalog, rootfs_key: str) -> Path:
    key = hashlib.sha256(f"{catalog.key}:{rootfs_key}".encode()).hexdigest()[:16]
    return cache_dir / f"prompts-{key}"


def prompt_file(sounds_dir: Path, prompt_id: str) -> Path:
    return sounds_dir / LANGUAGE / "ivr" / f"{prompt_id}.wav"


def tone_file(sounds_dir: Path, tone_id: str) -> Path:
    return sounds_dir / PROGRESS_DIRECTORY / f"{tone_id}.wav"


def _is_complete(sounds_dir: Path, catalog: Catalog) -> bool:
    return (
        (sounds_dir / ".complete").is_file()
        and all(prompt_file(sounds_dir, pid).is_file() for pid in catalog.prompts)
        and all(tone_file(sounds_dir, tid).is_file() for tid in catalog.tones)
    )


def build_prompts(
    root: Path, rootfs_key: str, cache_dir: Path, catalog: Catalog | None = None
) -> PromptsReport:
    """Build (or reuse) the prompt files; ``root`` is the lab's root filesystem."""
    catalog = catalog or load_catalog()
    started = time.monotonic()
    target = sounds_dir_for(cache_dir, catalog, rootfs_key)
    if _is_complete(target, catalog):
        return PromptsReport(target, False, time.monotonic() - started, len(catalog.prompts))
    work_name = f"ivr-prompts-{os.getpid()}"
    work = root / "tmp" / work_name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        lines = ["set -eu", f"cd /tmp/{work_name}"]
        for prompt in catalog.prompts.values():
            out = shlex.quote(f"{prompt.id}.wav")
            if prompt.silence is not None:
                lines.append(f"sox -n -r {catalog.sample_rate} -c 1 -b 16 {out} trim 0 {prompt.silence:.3f}")
                continue
            (work / f"{prompt.id}.txt").write_text(prompt.speech + "\n", encoding="utf-8")
            raw = shlex.quote(f"{prompt.id}.raw.wav")
            lines.append(
                f"open_jtalk -x {DICTIONARY} -m {VOICE} -r {catalog.speed} -g {catalog.volume_db} "
                f"-ow {raw} {shlex.quote(prompt.id + '.txt')}"
            )
            # Trim the engine's leading/trailing silence, keep a short natural pause, normalise.
            lines.append(
                f"sox {raw} -r {catalog.sample_rate} -c 1 -b 16 -e signed-integer {out} "
                "silence 1 0.02 -45d reverse silence 1 0.02 -45d reverse norm -3 pad 0.05 0.15"
            )
        for tone in catalog.tones.values():
            out = shlex.quote(f"tone-{tone.id}.wav")
            lines.append(
                f"sox -n -r {catalog.sample_rate} -c 1 -b 16 -e signed-integer {out} {tone.sox_effects()}"
            )
        (work / "build.sh").write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = subprocess.run(
            ["chroot", str(root), "/bin/sh", f"/tmp/{work_name}/build.sh"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise PromptError(f"prompt build failed (exit {result.returncode}): {result.stderr[-2000:]}")
        partial = cache_dir / f"{target.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        (partial / LANGUAGE / "ivr").mkdir(parents=True)
        for prompt in catalog.prompts.values():
            shutil.copy2(work / f"{prompt.id}.wav", prompt_file(partial, prompt.id))
        if catalog.tones:
            (partial / PROGRESS_DIRECTORY).mkdir()
        for tone in catalog.tones.values():
            shutil.copy2(work / f"tone-{tone.id}.wav", tone_file(partial, tone.id))
        (partial / "catalog.json").write_text(
            json.dumps({p.id: p.text for p in catalog.prompts.values()}, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
        (partial / ".complete").write_text(catalog.key)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PromptsReport(target, True, time.monotonic() - started, len(catalog.prompts))

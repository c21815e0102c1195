"""The Asterisk root filesystem: Debian sid made by mmdebstrap, cached by the hash of its recipe.

The cache entry is ``<cache_dir>/rootfs-<key>``, where the key hashes everything that decides its
content (suite, components, variant, package list, recipe version), so a change to the package list
builds a new tree and an unchanged list reuses the old one in milliseconds. A build goes to a
temporary directory next to it and is renamed into place only once complete, under a lock, so an
interrupted or concurrent build never leaves a half-made tree that looks finished.

The Debian mirror is read from the machine's own apt sources (never written into the repository).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = 1
SUITE = "sid"
COMPONENTS = ("main", "contrib")
VARIANT = "apt"
PACKAGES = (
    "asterisk",  # Asterisk 22 with chan_pjsip and res_agi
    "open-jtalk",  # Japanese text-to-speech for the prompts
    "open-jtalk-mecab-naist-jdic",  # its dictionary
    "hts-voice-nitech-jp-atr503-m001",  # its voice (contrib)
    "sox",  # conversion to 8 kHz mono 16-bit
)
APT_OPTIONS = (
    # sid's Release file is often past its Valid-Until on mirrors.
    'Acquire::Check-Valid-Until "false"',
    # Only what we name: no core sounds, music on hold or other recommendations.
    'APT::Install-Recommends "false"',
)
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


class RootfsError(RuntimeError):
    """The root filesystem could not be built."""


@dataclass(frozen=True)
class RootfsRecipe:
    suite: str = SUITE
    components: tuple[str, ...] = COMPONENTS
    variant: str = VARIANT
    packages: tuple[str, ...] = PACKAGES
    apt_options: tuple[str, ...] = APT_OPTIONS

    @property
    def key(self) -> str:
        payload = json.dumps(
            {
                "recipe": RECIPE_VERSION,
                "suite": self.suite,
                "components": list(self.components),
                "variant": self.variant,
                "packages": sorted(self.packages),
                "apt_options": list(self.apt_options),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuildReport:
    path: Path
    built: bool  # False: taken from the cache
    seconds: float


def rootfs_path(cache_dir: Path, recipe: RootfsRecipe) -> Path:
    return cache_dir / f"rootfs-{recipe.key}"


def is_complete(path: Path) -> bool:
    return (path / ".ivr-lab-complete").is_file() and (path / "usr/sbin/asterisk").exists()


def host_debian_mirror(sources_list: Path = APT_SOURCES_LIST, sources_dir: Path = APT_SOURCES_DIR) -> str:
    """The first Debian archive URI of the host's apt sources (security archives skipped)."""
    candidates: list[tuple[str, str]] = []  # (uri, suite)
    if sources_dir.is_dir():
        for path in sorted(sources_dir.glob("*.sources")):
            candidates.extend(_parse_deb822(path.read_text(errors="replace")))
        for path in sorted(sources_dir.glob("*.list")):
            candidates.extend(_parse_one_line_style(path.read_text(errors="replace")))
    if sources_list.is_file():
        candidates.extend(_parse_one_line_style(sources_list.read_text(errors="replace")))
    for uri, suite in candidates:
        if uri.startswith(("http://", "https://", "file:/")) and not _is_security(uri, suite):
            return uri.rstrip("/")
    raise RootfsError(
        "no Debian mirror found in the host's apt sources "
        f"({sources_dir}/*.sources, {sources_list}); set IVR_LAB__MIRROR"
    )


def _is_security(uri: str, suite: str) -> bool:
    return "security" in uri or suite.endswith("-security")


def _parse_deb822(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split() or [""]
        for uri in fields.get("uris", "").split():
            found.append((uri, suites[0]))
    return found


def _parse_one_line_style(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])
        parts = line.split()
        if len(parts) >= 2:
            found.append((parts[0], parts[1]))
    return found


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_rootfs(
    cache_dir: Path, *, recipe: RootfsRecipe | None = None, mirror: str | None = None, log: Path | None = None
) -> BuildReport:
    """Return the cached root filesystem, building it first when it is missing."""
    recipe = recipe or RootfsRecipe()
    started = time.monotonic()
    target = rootfs_path(cache_dir, recipe)
    if is_complete(target):
        return BuildReport(target, False, time.monotonic() - started)
    with _locked(cache_dir):
        if is_complete(target):  # built by someone else while we waited
            return BuildReport(target, False, time.monotonic() - started)
        if shutil.which("mmdebstrap") is None:
            raise RootfsError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        mirror = mirror or host_debian_mirror()
        partial = cache_dir / f"rootfs-{recipe.key}.partial-{os.getpid()}"
        _remove_tree(partial)
        if target.exists():  # an incomplete tree left by an older, interrupted tool
            _remove_tree(target)
        command = [
            "mmdebstrap",
            f"--variant={recipe.variant}",
            f"--components={','.join(recipe.components)}",
            *(f"--aptopt={option}" for option in recipe.apt_options),
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(partial),
            mirror,
        ]
        log_path = log or cache_dir / f"rootfs-{recipe.key}.build.log"
        with open(log_path, "w") as log_file:
            result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            _remove_tree(partial)
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise RootfsError(f"mmdebstrap failed (exit {result.returncode}), see {log_path}:\n{tail}")
        (partial / ".ivr-lab-complete").write_text(
            json.dumps({"key": recipe.key, "packages": list(recipe.packages), "built_at": time.time()})
        )
        os.rename(partial, target)
    return BuildReport(target, True, time.monotonic() - started)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def stale_rootfs(cache_dir: Path, recipe: RootfsRecipe | None = None) -> list[Path]:
    """Trees of other recipes (candidates for clean-up)."""
    recipe = recipe or RootfsRecipe()
    keep = rootfs_path(cache_dir, recipe)
    return [p for p in sorted(cache_dir.glob("rootfs-*")) if p.is_dir() and p != keep]

"""The settings' directories: relative ones (the defaults ``data`` and ``.lab``) belong to the working
directory the settings were built in, never to where the code is installed (an installed wheel's
site-packages is no place for a database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.settings import Settings


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("IVR_DATA_DIR", "IVR_DATABASE_URL", "IVR_LAB__RUN_DIR", "IVR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work.resolve()


def test_default_directories_are_the_working_directorys_made_absolute(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings()
    assert settings.data_dir == workdir / "data"
    assert settings.lab.run_dir == workdir / ".lab"
    assert settings.effective_database_url == f"sqlite:///{workdir / 'data' / 'ivr.sqlite3'}"
    monkeypatch.chdir(tmp_path)  # a later change of directory moves nothing
    assert settings.data_dir == workdir / "data"
    assert Settings().data_dir == tmp_path.resolve() / "data"


def test_relative_directories_from_the_environment_are_made_absolute(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVR_DATA_DIR", "state/ivr")
    monkeypatch.setenv("IVR_LAB__RUN_DIR", "../lab-run")
    settings = Settings()
    assert settings.data_dir == workdir / "state" / "ivr"
    assert settings.lab.run_dir == workdir.parent / "lab-run"
    monkeypatch.setenv("IVR_DATA_DIR", "/var/lib/ivr")
    assert Settings().data_dir == Path("/var/lib/ivr")

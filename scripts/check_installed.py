"""The installed package finds everything it ships (run by scripts/check-installed, not by pytest).

scripts/check-installed builds the wheel, installs it (not editable) into SITE and runs this file
from a scratch working directory with PYTHONPATH=SITE. Each check prints `ok` or `FAIL` with the
reason; the exit status is 1 if any failed.

    python check_installed.py --site SITE --repo REPO
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

PACKAGES = ("core", "ivr", "web_stub", "notices", "stack")
PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")


class CheckFailed(AssertionError):
    pass


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Checks:
    def __init__(self, site: Path, repo: Path) -> None:
        self.site = site
        self.repo = repo
        self.work = Path.cwd()
        self.data = self.work / "data"  # the default data_dir, relative to the working directory

    def within_site(self, path: object) -> bool:
        return Path(str(path)).resolve().is_relative_to(self.site)

    def ivr(self, *words: str) -> str:
        """The installed `ivr` console script, from the scratch directory, without IVR_* settings
        (PYTHONPATH: the install, which wins over the venv's editable one, the first check shows)."""
        result = subprocess.run(
            [str(self.site / "bin" / "ivr"), *words],
            cwd=self.work,
            env={**os.environ, "PYTHONPATH": str(self.site)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        expect(
            result.returncode == 0,
            f"`ivr {' '.join(words)}` exited {result.returncode}:\n{result.stdout}{result.stderr}",
        )
        return result.stdout

    # ------------------------------------------------------------------------------------ checks

    def packages_come_from_the_installed_wheel(self) -> str:
        import importlib

        for name in PACKAGES:
            module = importlib.import_module(name)
            where = module.__file__
            expect(self.within_site(where), f"{name} imported from {where}, not from {self.site}")
        editable = [f for f in sys.meta_path if "__editable__" in getattr(f, "__module__", "")]
        return "PYTHONPATH wins over the venv's editable finder" if editable else "no editable finder active"

    def every_tracked_package_file_is_installed(self) -> str:
        listed = subprocess.run(
            ["git", "-C", str(self.repo), "ls-files", "-z", "--", *PACKAGES],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        tracked = [name for name in listed if name and (self.repo / name).is_file()]
        expect(tracked, f"git lists no files of {PACKAGES} in {self.repo}")
        missing = [name for name in tracked if not (self.site / name).is_file()]
        listing = "\n  ".join(missing)
        expect(not missing, f"missing from the installed package (pyproject's package-data?):\n  {listing}")
        return f"{len(tracked)} files"

    def asterisk_configuration_renders(self) -> str:
        from ivr.assets import ASTERISK_CONFIG_DIR

        expect(self.within_site(ASTERISK_CONFIG_DIR), f"templates read from {ASTERISK_CONFIG_DIR}")
        etc = self.work / "etc-asterisk"
        written = {Path(line).name for line in self.ivr("lab", "render", "--out", str(etc)).splitlines()}
        for name in ("extensions.conf", "ivr-agi.conf", "asterisk.conf", "pjsip.conf", "modules.conf"):
            expect(name in written and (etc / name).is_file(), f"`ivr lab render` wrote no {name}")
        for name in written:
            for line in (etc / name).read_text(encoding="utf-8").splitlines():
                unfilled = PLACEHOLDER.search(line) and not line.lstrip().startswith(";")
                expect(not unfilled, f"{name}: a placeholder left: {line}")
        expect(
            "agi://127.0.0.1:573/temp-password" in (etc / "extensions.conf").read_text(encoding="utf-8"),
            "extensions.conf does not reach the FastAGI daemon at 127.0.0.1:573",
        )
        secret = (self.data / "agi-secret").read_text(encoding="utf-8").strip()  # made by the render
        agi_conf = (etc / "ivr-agi.conf").read_text(encoding="utf-8")
        expect(secret in agi_conf, "ivr-agi.conf lacks the secret of data/agi-secret")
        return f"{len(written)} files"

    def prompt_catalog_loads(self) -> str:
        from ivr.assets import PROMPT_CATALOG
        from ivr.lab.prompts import PROMPT_IDS, load_catalog

        expect(self.within_site(PROMPT_CATALOG), f"catalog read from {PROMPT_CATALOG}")
        catalog = load_catalog()
        missing = set(PROMPT_IDS) - set(catalog.prompts)
        expect(not missing, f"the catalog lacks {sorted(missing)}")
        return f"{len(catalog.prompts)} prompts"

    def schema_applies_to_sqlite_in_the_default_data_dir(self) -> str:
        print("  " + self.ivr("db", "upgrade").strip())
        expect((self.data / "ivr.sqlite3").is_file(), f"`ivr db upgrade` made no {self.data / 'ivr.sqlite3'}")
        self.ivr("db", "current")  # exit 0: up to date
        from stack.settings import Settings

        settings = Settings()
        expect(settings.data_dir == self.data, f"data_dir {settings.data_dir}, not {self.data}")
        expect(settings.lab.run_dir == self.work / ".lab", f"lab.run_dir {settings.lab.run_dir}")
        return str(self.data / "ivr.sqlite3")

    def web_pages_render(self) -> str:
        with warnings.catch_warnings():  # starlette's note on httpx: the tests' TestClient too
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient

        from core.db import make_engine, make_session_factory
        from notices.web import create_support_app
        from stack.settings import Settings
        from web_stub.app import create_app

        settings = Settings()
        url = settings.effective_database_url
        web = create_app(settings.web, settings.smtp, settings.credentials, database_url=url)
        with TestClient(web) as client:
            login = client.get("/login")
            expect(login.status_code == 200, f"GET /login: {login.status_code}")
            expect('name="password"' in login.text, "the login page has no password field")
            css = client.get("/static/site.css")
            expect(css.status_code == 200 and "{" in css.text, f"GET /static/site.css: {css.status_code}")
        engine = make_engine(url)
        try:
            support = create_support_app(settings, make_session_factory(engine))
            with TestClient(support) as client:
                faq = client.get("/support/faq")
                expect(faq.status_code == 200, f"GET /support/faq: {faq.status_code}")
                expect("よくあるご質問" in faq.text, "the support FAQ page lacks its title")
                for path in ("/support/static/support.css", "/static/site.css"):
                    answer = client.get(path)
                    expect(answer.status_code == 200, f"support site GET {path}: {answer.status_code}")
        finally:
            engine.dispose()
        return "/login, /static/site.css, /support/faq, the support site's styles"

    def everything_ran_from_the_installed_wheel(self) -> str:
        stray = sorted(
            name
            for name, module in list(sys.modules.items())
            if name.split(".")[0] in PACKAGES
            and getattr(module, "__file__", None)
            and not self.within_site(module.__file__)
        )
        expect(not stray, f"modules loaded from elsewhere: {stray}")
        return f"{sum(1 for n in sys.modules if n.split('.')[0] in PACKAGES)} modules"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", required=True, type=Path, help="the --target directory of the install")
    parser.add_argument("--repo", required=True, type=Path, help="the checkout the wheel was built from")
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("IVR_")]:  # the defaults, not the caller's settings
        del os.environ[name]
    checks = Checks(args.site.resolve(), args.repo.resolve())
    expect(not checks.work.is_relative_to(checks.repo), f"run from {checks.work}, inside the checkout")
    steps: list[Callable[[], str]] = [
        checks.packages_come_from_the_installed_wheel,
        checks.every_tracked_package_file_is_installed,
        checks.asterisk_configuration_renders,
        checks.prompt_catalog_loads,
        checks.schema_applies_to_sqlite_in_the_default_data_dir,
        checks.web_pages_render,
        checks.everything_ran_from_the_installed_wheel,
    ]
    failed = 0
    for step in steps:
        title = step.__name__.replace("_", " ")
        try:
            detail = step()
        except CheckFailed as exc:
            failed += 1
            print(f"FAIL {title}: {exc}")
        except Exception:
            failed += 1
            print(f"FAIL {title}:\n{traceback.format_exc()}")
        else:
            print(f"ok   {title} ({detail})")
    if failed:
        print(f"installed package: {failed} of {len(steps)} checks FAILED")
        return 1
    print(f"installed package: all {len(steps)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

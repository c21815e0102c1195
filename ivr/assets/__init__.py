"""The files the voice ships beside its code, read as package data (so an installed wheel has them).

- ``asterisk.conf.d/*.conf`` and ``dialplan/*.conf``: the Asterisk configuration an operator deploys,
  with ``@NAME@`` placeholders that `ivr.lab.config` fills in (`ivr lab up`, `ivr lab render`);
- ``prompts/catalog.toml``: the prompt ids and their Japanese texts (`ivr.lab.prompts`).

The repository's top-level ``asterisk.conf.d/``, ``dialplan/`` and ``prompts/`` are symlinks to
these directories. pyproject's ``[tool.setuptools.package-data]`` lists them and
``scripts/check-installed`` proves a non-editable install carries them.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

ASSETS: Traversable = files(__name__)
ASTERISK_CONFIG_DIR: Traversable = ASSETS / "asterisk.conf.d"
DIALPLAN_DIR: Traversable = ASSETS / "dialplan"
PROMPT_CATALOG: Traversable = ASSETS / "prompts" / "catalog.toml"

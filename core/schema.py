"""The whole schema: ``METADATA`` has every table once every model module is imported.

The models live in three modules on one ``Base``: the credential core's (``core.models``), the web
login's (``core.web_models``: sessions, rate counters, locks) and the support site's
(``core.notice_models``). Code imports only the module whose tables it uses, so a call (the
classic ``ivr agi`` process above all) does not build the web's and the notices' mappings; what
needs the whole schema (the migrations, the check that the migrations match the models) imports
this module.
"""

from __future__ import annotations

from core import models, notice_models, web_models  # noqa: F401 - each puts its tables on METADATA

__all__ = ["METADATA"]

METADATA = models.Base.metadata

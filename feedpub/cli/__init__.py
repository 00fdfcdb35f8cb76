"""The ``feedpub`` command: parses arguments, calls the library, prints.

Each submodule adds its commands to :data:`main`; none of them does work the
library cannot do from Python.
"""

from __future__ import annotations

from feedpub.cli import build, check, db, digest, preview, schedule, serve, status, subscribers
from feedpub.cli._common import main

__all__ = ["main"]
_COMMAND_MODULES = (build, check, db, digest, preview, schedule, serve, status, subscribers)

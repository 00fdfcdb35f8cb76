"""The ``feedpub`` command: parses arguments, calls the library, prints.

Each submodule adds its commands to :data:`main` when it is imported, which the
group does on demand (see ``_COMMAND_MODULES``); none of them does work the
library cannot do from Python.
"""

from __future__ import annotations

from feedpub.cli._common import main

__all__ = ["main"]

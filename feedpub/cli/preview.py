"""`feedpub preview` commands (being built)."""

from __future__ import annotations

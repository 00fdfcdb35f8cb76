"""``python -m feedpub.cli``: the same as the ``feedpub`` command."""

from feedpub.cli import main

main()

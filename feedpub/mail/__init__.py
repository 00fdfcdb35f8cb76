"""Email: render an edition once (:mod:`.render`), then one message per recipient
(:mod:`.message`), handed to a transport (:mod:`.transports`).

>>> rendered = render_edition(entries, settings=s, newsletter=n, kind="digest",
...                           edition_id="2026-w05", date=now)        # doctest: +SKIP
>>> template = prepare_message(settings=s, newsletter=n, rendered=rendered,
...                            edition_key="weekly/2026-w05")         # doctest: +SKIP
>>> data = template.build(Recipient("ada@example.com", "Ada", unsub, prefs),
...                       date=now)                                   # doctest: +SKIP

The submodules are imported by name: importing the package loads none of them.
The settings never import this package: the transport is parsed in
:mod:`feedpub.config` and the language in :mod:`feedpub.i18n`.
"""

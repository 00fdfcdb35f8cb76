"""DKIM signing: keys read once per run, each message signed as it is built.

A template with the run's signer signs each message it builds
(:meth:`~feedpub.mail.message.MessageTemplate.build`): the parts that all
recipients share are canonicalised once, and OpenSSL signs in a fraction of a
millisecond (RSA-2048 about 0.4 ms, Ed25519 under 0.1 ms), so a message costs
well under a millisecond more signed than unsigned. A pool of processes,
which had to pickle every message both ways and took seconds to start, would
cost more CPU than that (benchmarks/send.py compares signed and unsigned
sending). A message that comes unsigned (the composer's template has no
signer) is signed whole in the sending thread. Messages leave in claim order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from feedpub.config import Settings
from feedpub.mail.message import DkimSigner
from feedpub.sender.options import SendOptions

Finished = Callable[[], bytes]
"""Gives a message ready to send; called in a sending thread (which may sign it there)."""


class Signing:
    """No DKIM: messages are sent as they are built."""

    signer: DkimSigner | None = None
    chunk = 1
    """Messages handed over at a time."""
    ahead = 0
    """Messages to build ahead of the sending threads, besides one per thread."""

    def start(self, messages: list[bytes]) -> list[Finished]:
        return [_ready(message) for message in messages]


def _ready(message: bytes) -> Finished:
    return lambda: message


class SignInThread(Signing):
    def __init__(self, signer: DkimSigner) -> None:
        self.signer = signer
        self._sign = signer.sign

    def start(self, messages: list[bytes]) -> list[Finished]:
        return [_ready(message) if message.startswith(b"DKIM-Signature:")
                else functools.partial(self._sign, message) for message in messages]


@contextmanager
def start_signing(settings: Settings, options: SendOptions, due: int) -> Iterator[Signing]:
    """How a run's messages are signed. The key files are read here, once: a bad key is a
    :class:`~feedpub.errors.ConfigError` before anything is sent. ``options`` and ``due``
    no longer change anything (``options.sign_processes`` chose a pool of processes)."""
    config = settings.mail.dkim
    yield Signing() if config is None else SignInThread(DkimSigner.from_config(config))

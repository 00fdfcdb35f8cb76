"""DKIM signing, in the sending threads or a few messages ahead in a pool of processes.

Signing (RSA in pure Python, ~10 ms a message) runs in a pool of processes, one
per CPU by default, when many messages are due; each process reads the key
once. Messages still leave in claim order: each one's :data:`Finished` waits
for its own signature.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager

from feedpub.config import DkimConfig, Settings
from feedpub.mail.message import DkimSigner
from feedpub.sender.options import SendOptions

_POOL_MINIMUM = 200
"""With ``sign_processes`` unset, fewer messages due than this are signed in the sending
threads: starting the processes (a second of CPU each) would cost more than it saves."""

Finished = Callable[[], bytes]
"""Gives a message ready to send; called in a sending thread (it may wait for a signature)."""


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
        return [functools.partial(self._sign, message) for message in messages]


class SignInPool(Signing):
    """Each process signs a few messages per task (one round trip each), and two tasks per
    process wait their turn, so that no process idles."""

    chunk = 8

    def __init__(self, signer: DkimSigner, pool: ProcessPoolExecutor, processes: int) -> None:
        self.signer = signer
        self.pool = pool
        self.ahead = 2 * processes * self.chunk

    def start(self, messages: list[bytes]) -> list[Finished]:
        signed: Future[list[bytes]] = self.pool.submit(_sign_in_worker, messages)
        return [functools.partial(_nth_result, signed, n) for n in range(len(messages))]


def _nth_result(future: Future[list[bytes]], n: int) -> bytes:
    return future.result()[n]


# Each signing process reads the key once (in the pool's initializer) and keeps it here.
_worker_signer: DkimSigner | None = None


def _start_signer(config: DkimConfig) -> None:
    global _worker_signer
    _worker_signer = DkimSigner.from_config(config)


def _sign_in_worker(messages: list[bytes]) -> list[bytes]:
    assert _worker_signer is not None, "the pool's initializer reads the key"
    return [_worker_signer.sign(message) for message in messages]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def start_signing(settings: Settings, options: SendOptions, due: int) -> Iterator[Signing]:
    config = settings.mail.dkim
    if config is None:
        yield Signing()
        return
    signer = DkimSigner.from_config(config)  # here first: a bad key is a ConfigError, once
    processes = options.sign_processes or _cpus()
    if processes <= 1 or (options.sign_processes is None and due < _POOL_MINIMUM):
        yield SignInThread(signer)
        return
    # spawn: a fork would copy this process's threads' locks and database connections.
    pool = ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_signer, initargs=(config,),
    )
    try:
        yield SignInPool(signer, pool, processes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


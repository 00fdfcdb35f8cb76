"""feedpub: Markdown posts to feeds and email digests."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("feedpub")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

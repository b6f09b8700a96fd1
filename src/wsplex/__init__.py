"""wsplex: one WebSocket server, many application protocols."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wsplex")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

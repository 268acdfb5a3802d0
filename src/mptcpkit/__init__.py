"""mptcpkit: the Multipath TCP toolbox for Linux."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mptcpkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

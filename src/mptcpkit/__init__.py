"""mptcpkit: the Multipath TCP toolbox for Linux."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # lazy: importlib.metadata costs a long-running process (the pm daemon) about 7 MB of RSS
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("mptcpkit")
        except PackageNotFoundError:  # running from a source tree without install
            return "0.0.0+unknown"
    raise AttributeError(name)


__all__ = ["__version__"]

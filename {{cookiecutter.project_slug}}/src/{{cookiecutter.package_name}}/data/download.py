"""Fail fast and in one line when a data set or weights cannot be fetched."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from {{ cookiecutter.package_name }}.errors import UserError


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def download_error(name: str, url: str, folder: str, files: str, reason: str) -> UserError:
    """The one-line error for a data set that is neither on disk nor downloadable."""
    return UserError(
        f"{name} is not in {folder} and could not be downloaded from {url} ({reason}): "
        f"connect to the internet and rerun, or download {files} by hand into {folder}."
    )

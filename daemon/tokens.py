"""How secrets handed to clients (session cookies, one-time links) are kept: only as a digest."""

from __future__ import annotations

import hashlib


def digest(secret: str) -> str:
    """SHA-256 of a token: a memory dump of the store reveals no usable token."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()

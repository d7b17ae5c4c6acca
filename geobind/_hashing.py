"""SHA-256 of files: one helper for weights files, scene sources and anything else geobind hashes.

At the bottom layer (standard library only), so the model I/O and the Zarr store share it and
hashing a file never imports torch.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (never the whole file at once).

    Example:
        >>> p = getfixture("tmp_path") / "x"
        >>> _ = p.write_bytes(b"abc")
        >>> sha256_file(p)[:12]
        'ba7816bf8f01'
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

"""Content identity of a configuration: the same data always gets the same id.

The id is a sha256 over named, typed, canonical fields, so it is independent of the
file, the format and the order in which data arrives. Provenance is not part of it:
the same frame read from an OUTCAR and from an extxyz copy is one configuration.
"""

from __future__ import annotations

import hashlib

import numpy as np

HASH_SCHEME = "sha256-v1:numbers,positions,cell,pbc,energy,free_energy,forces,stress"
ID_HEX_CHARS = 32  # 128 bits: collisions are not a concern below ~10^18 configurations


def _update(h: hashlib._Hash, name: str, value: np.ndarray | float | None, dtype: str) -> None:
    h.update(name.encode())
    if value is None:
        h.update(b"\x00null")
        return
    # +0.0 folds -0.0 into 0.0, so the sign of a zero does not change the identity
    arr = np.ascontiguousarray(value, dtype=dtype)
    if arr.dtype.kind == "f":
        arr = arr + 0.0
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())


def config_id(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    energy: float,
    free_energy: float | None,
    forces: np.ndarray,
    stress: np.ndarray | None,
) -> str:
    """Hex content hash of one configuration (see HASH_SCHEME)."""
    h = hashlib.sha256(HASH_SCHEME.encode())
    _update(h, "numbers", numbers, "<i8")
    _update(h, "positions", positions, "<f8")
    _update(h, "cell", cell, "<f8")
    _update(h, "pbc", pbc, "?")
    _update(h, "energy", energy, "<f8")
    _update(h, "free_energy", free_energy, "<f8")
    _update(h, "forces", forces, "<f8")
    _update(h, "stress", stress, "<f8")
    return h.hexdigest()[:ID_HEX_CHARS]

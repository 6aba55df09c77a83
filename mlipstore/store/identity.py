"""Content identity of a configuration: the same data always gets the same id.

The id is a sha256 over named, typed, canonical fields, so it is independent of the
file, the format and the order in which data arrives. Provenance is not part of it:
the same frame read from an OUTCAR and from an extxyz copy is one configuration. Nor are
the source's loss weights, nor its ``energy_corrected`` where the raw energy is known
(a reference choice on top of the DFT result, kept with the first copy stored); a
configuration without a raw energy is identified by its ``energy_corrected`` instead.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

# the hash starts with these bytes (unchanged since schema version 1: ids stay valid)
_HASH_PREFIX = "sha256-v1:numbers,positions,cell,pbc,energy,free_energy,forces,stress"
HASH_SCHEME = (_HASH_PREFIX + "[,energy_corrected where energy is null]"
               "[,method_fingerprint where known]")
ID_HEX_CHARS = 32  # 128 bits: collisions are not a concern below ~10^18 configurations


def _update(h: hashlib._Hash, name: bytes, value: np.ndarray | None, dtype: str) -> None:
    h.update(name)
    if value is None:
        h.update(b"\x00null")
        return
    # +0.0 folds -0.0 into 0.0, so the sign of a zero does not change the identity
    arr = np.ascontiguousarray(value, dtype=dtype)
    if arr.dtype.kind == "f":
        arr = arr + 0.0
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())


def _update_scalar(h: hashlib._Hash, name: bytes, value: float | None) -> None:
    """As ``_update`` for a float, which numpy hashes as shape (1,), without numpy."""
    h.update(name)
    h.update(b"\x00null" if value is None else b"(1,)" + struct.pack("<d", value + 0.0))


def config_id(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    energy: float | None,
    free_energy: float | None,
    forces: np.ndarray,
    stress: np.ndarray | None,
    energy_corrected: float | None = None,
    method_fingerprint: str | None = None,
) -> str:
    """Hex content hash of one configuration (see HASH_SCHEME)."""
    h = hashlib.sha256(_HASH_PREFIX.encode())
    _update(h, b"numbers", numbers, "<i8")
    _update(h, b"positions", positions, "<f8")
    _update(h, b"cell", cell, "<f8")
    _update(h, b"pbc", pbc, "?")
    _update_scalar(h, b"energy", energy)
    _update_scalar(h, b"free_energy", free_energy)
    _update(h, b"forces", forces, "<f8")
    _update(h, b"stress", stress, "<f8")
    if energy is None:  # ids of configurations with a raw energy are those of version 1
        _update_scalar(h, b"energy_corrected", energy_corrected)
    if method_fingerprint is not None:  # ids without a method are those of version 2
        h.update(b"method_fingerprint" + method_fingerprint.encode())
    return h.hexdigest()[:ID_HEX_CHARS]

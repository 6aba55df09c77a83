"""The train/test split, decided per configuration by its content id and a seed.

A configuration is in the test set when sha256(seed, id) falls below the test fraction,
so its side never changes as data is added or removed: adding data can never move a
test configuration into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def test_mask(ids: Iterable[str], test_fraction: float, seed: int) -> np.ndarray:
    """Boolean array: True where the configuration belongs to the test set."""
    threshold = int(test_fraction * 2**64)
    prefix = f"mlipstore-split-v1:{seed}:".encode()
    draws = [int.from_bytes(hashlib.sha256(prefix + i.encode()).digest()[:8], "big")
             for i in ids]
    return np.array([d < threshold for d in draws], dtype=bool)


test_mask.__test__ = False  # not a pytest test, despite its name

"""A fast extended-XYZ reader that gives exactly what ``ase.io.read`` gives.

ASE parses the comment line character by character and every atom line value by value,
about 0.9 ms for a 64-atom frame. This reader handles the common case in bulk: comment
lines of ``key=value`` and ``key="quoted value"`` pairs, and the species followed by
real columns.
It converts values with the same functions as ASE (Python's ``float``, ASE's value rules
and ``parse_properties``) and then applies ASE's rules for cell, pbc,
calculator results and arrays, so the labels are bit for bit those of ASE. Any frame
outside that case (escapes, brackets, integer or logical columns, ragged lines, unknown
elements, ...) is handed to ASE itself, errors included.

(The C parser of the ``extxyz`` package is faster still, but it crashed the process on
264 of 3,000 hostile inputs of ``tests/test_fuzz.py``; a store must reject such files,
not die on them.)
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.calculator import all_properties
from ase.data import atomic_numbers
from ase.io.extxyz import (
    SPECIAL_3_3_KEYS,
    UNPROCESSED_KEYS,
    parse_properties,
    per_config_properties,
)
from ase.io.formats import open_with_compression

from ..store.configuration import RawFrame

# a comment line this reader takes: whitespace-separated KEY, KEY=VALUE or KEY="VALUE",
# none of them with escapes, brackets or single quotes (ASE's grammar has those too)
_PLAIN = r"""[^\s"'{}\[\]\\=]+"""
_PAIR = re.compile(rf'({_PLAIN})(?:=(?:"([^"\\]*)"|({_PLAIN})))?')
_COMMENT = re.compile(rf'\s*(?:{_PAIR.pattern}(?:\s+|$))*')
_VALUE_ITEMS = re.compile(r"[^\s,]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLS = {"T": True, "F": False, "true": True, "false": False, "True": True,
          "False": False, "TRUE": True, "FALSE": False}
_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"


class _NotFast(Exception):
    """This frame is outside the fast path: ASE reads it."""


def _convert(key: str, value: str):
    """A comment-line value as ASE's ``key_val_str_to_dict`` converts it."""
    items = _VALUE_ITEMS.findall(value)
    if items and key.lower() not in UNPROCESSED_KEYS and all(map(_DECIMAL.fullmatch, items)):
        # decimals with a point: numpy's int parse fails and its float parse gives
        # Python's float, so skip to that (the common energy, stress and Lattice values)
        number = np.array(list(map(float, items)))
        value = number[0] if len(number) == 1 else number
        if key in SPECIAL_3_3_KEYS:
            if value.shape != (9,):
                raise _NotFast  # ASE raises its own error for this
            value = value.reshape((3, 3), order="F")
        return value
    # other values (Properties, pbc, names, integers) repeat from frame to frame
    value = _convert_other(key, value)
    return value.copy() if isinstance(value, (np.ndarray, list)) else value


@functools.lru_cache(maxsize=1024)
def _convert_other(key: str, value: str):
    """ASE's conversion, line by line (cached: callers copy mutable results)."""
    if key.lower() in UNPROCESSED_KEYS:
        return value
    items = _VALUE_ITEMS.findall(value)
    try:
        try:
            number = np.array(items, dtype=int)
        except (ValueError, OverflowError):
            number = np.array(items, dtype=float)
        value = number[0] if len(number) == 1 else number
    except (ValueError, OverflowError):
        pass
    if key in SPECIAL_3_3_KEYS:
        if not isinstance(value, np.ndarray) or value.shape != (9,):
            raise _NotFast  # ASE raises its own error for this
        value = np.array(value).reshape((3, 3), order="F")
    if isinstance(value, str):
        try:
            flags = [_BOOLS[item] for item in _VALUE_ITEMS.findall(value)]
            value = flags[0] if len(flags) == 1 else flags
        except KeyError:
            if value.startswith("_JSON "):
                raise _NotFast from None
    return value


def parse_comment(line: str) -> dict:
    """The comment line as ASE's ``key_val_str_to_dict`` parses it (raises _NotFast
    where this simpler grammar does not apply)."""
    line = line.strip()
    if not _COMMENT.fullmatch(line):
        raise _NotFast
    info = {}
    for key, quoted, plain in _PAIR.findall(line):
        if quoted or plain:
            value = quoted or plain
        elif f"{key}=" in line:  # KEY="" : an empty value, rare enough to leave to ASE
            raise _NotFast
        else:
            value = "T"
        info[key] = _convert(key, value)
    return info


@functools.lru_cache(maxsize=64)
def _columns(properties: str) -> tuple[list[tuple[str, str, int]], int]:
    """(ASE name, type, number of columns) of each property, and the total columns."""
    parsed, names, dtype, _ = parse_properties(properties)
    columns = []
    for name in names:
        ase_name, ncols = parsed[name]
        kind = dtype[name if ncols == 1 else name + "0"].kind
        columns.append((ase_name, {"O": "S", "f": "R", "i": "I", "b": "L"}[kind], ncols))
    return columns, sum(ncols for _, _, ncols in columns)


@functools.lru_cache(maxsize=256)
def _atomic_number(symbol: bytes) -> int:
    try:
        return atomic_numbers[symbol.decode().capitalize()]
    except (KeyError, UnicodeDecodeError):
        raise _NotFast from None  # ASE reports the unknown symbol


def _atom_columns(lines: list[bytes], properties: str) -> dict[str, np.ndarray]:
    """Per-atom arrays by ASE name, parsed in bulk from the atom lines: the species, then
    real columns (the layout ASE and most codes write; others go to ASE)."""
    columns, width = _columns(properties)
    if columns[0][:2] != ("symbols", "S") or any(kind != "R" for _, kind, _ in columns[1:]):
        raise _NotFast
    rows = list(map(bytes.split, lines))
    if set(map(len, rows)) != {width}:
        raise _NotFast  # ragged or extra values: ASE's rules for those
    tokens = list(itertools.chain.from_iterable(rows))
    arrays = {"numbers": np.fromiter(map(_atomic_number, tokens[::width]), np.int64)}
    del tokens[::width]
    table = np.fromiter(map(float, tokens), np.float64, len(tokens))
    table = table.reshape(len(lines), width - 1)
    start = 0
    for name, _, ncols in columns[1:]:
        block = table[:, start:start + ncols]
        arrays[name] = block[:, 0].copy() if ncols == 1 else block.copy()
        start += ncols
    return arrays


def parse_frame(comment: bytes, lines: list[bytes]) -> RawFrame:
    """One frame as ASE's extxyz reader builds it (raises _NotFast outside the fast
    path, and whatever the number conversions raise on bad values)."""
    info = parse_comment(comment.decode())
    pbc_value = info.pop("pbc", [True] * 3 if "Lattice" in info else None)
    cell = info.pop("Lattice").T if "Lattice" in info else np.zeros((3, 3))
    arrays = _atom_columns(lines, info.pop("Properties", _DEFAULT_PROPERTIES))
    numbers = arrays.pop("numbers")
    if len(numbers) == 0:
        raise _NotFast
    pbc = np.zeros(3, bool)
    pbc[:] = False if pbc_value is None else pbc_value
    positions = arrays.pop("positions", np.zeros((len(numbers), 3)))
    results = {name: np.array(arrays.pop(name), float)
               for name in list(arrays) if name in all_properties}
    for key in [k for k in info if k in per_config_properties]:
        value = info.pop(key)
        if key == "stress" and value.shape == (3, 3):
            value = value[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        results[key] = value if key in ("energy", "magmom", "free_energy") \
            else np.array(value, float)
    arrays = {"numbers": numbers, "positions": positions, **arrays}
    return RawFrame(numbers, positions, np.array(cell, float), pbc, results, info, arrays)


def _ase_frame(count: bytes, comment: bytes, lines: list[bytes]) -> RawFrame:
    """A frame the fast path does not take, read by ASE from its own text."""
    text = b"".join([count, comment, *lines]).decode()
    return RawFrame.from_atoms(ase.io.read(io.StringIO(text), format="extxyz"))


def iread_labels(path: Path, offset: int = 0, count: int | None = None
                 ) -> Iterator[RawFrame]:
    """Every frame of an extxyz file (``check_xyz_frames`` has vetted its structure), or
    ``count`` frames from byte ``offset`` of a plain file.

    Like ASE, reading stops at the first blank line where a frame would start."""
    with open_with_compression(str(path), "rb") as fh:
        if offset:
            fh.seek(offset)
        for atoms_line in fh:
            if not atoms_line.strip():
                return
            comment = fh.readline()
            lines = list(itertools.islice(fh, max(int(atoms_line), 0)))
            try:
                yield parse_frame(comment, lines)
            except (_NotFast, UnicodeDecodeError, ValueError, OverflowError, KeyError,
                    IndexError, TypeError, json.JSONDecodeError):
                yield _ase_frame(atoms_line, comment, lines)
            if count is not None:
                count -= 1
                if count == 0:
                    return

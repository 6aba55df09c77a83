"""Reading DFT outputs, frame by frame: one reader per format behind one ``iread``.

Everything ASE reads goes through ``ase.io.iread`` (VASP OUTCAR/vasprun.xml, Quantum
ESPRESSO pw.x, FHI-aims, extxyz, ASE db, ...), compressed files included. pacemaker's
pickled DataFrames have their own reader, which refuses to unpickle unless trusted.
"""

from __future__ import annotations

import hashlib
import itertools
import lzma
import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.formats import (
    UnknownFileTypeError,
    filetype,
    get_compression,
    open_with_compression,
)

from .configuration import Configuration, FrameError, KeyMap

PACEMAKER_PICKLE = "pacemaker-pickle"
PICKLE_SUFFIXES = (".pckl.gzip", ".pckl.gz", ".pkl.gz", ".pckl", ".pkl", ".pickle")

# Formats that carry DFT labels; in a directory walk only these are picked up, so
# inputs such as POSCAR, INCAR or README next to the outputs are skipped, not rejected.
DFT_FORMATS = {
    "vasp-out", "vasp-xml", "espresso-out", "aims-output", "extxyz", "db", "traj",
    "castep-castep", "gpaw-out", "cp2k-restart", "gaussian-out", "orca-output",
    PACEMAKER_PICKLE,
}

# The last line a finished run writes: a file without it was cut (job killed, disk full,
# copy interrupted), and its last frame cannot be trusted.
FINISHED_MARKERS = {
    "vasp-out": b"General timing and accounting",
    "vasp-xml": b"</modeling>",
    "espresso-out": b"JOB DONE",
    "aims-output": b"Have a nice day",
}


class FileError(ValueError):
    """A whole file that cannot be read; the message says why."""


# what reading a damaged (compressed) file raises before any parser sees it
READ_ERRORS = (OSError, EOFError, UnicodeDecodeError, zlib.error, lzma.LZMAError)


@dataclass
class Frame:
    """One frame of a source file: a valid configuration or the reason it is not."""

    index: int
    config: Configuration | None = None
    error: str | None = None


def detect_format(path: Path) -> str:
    """The reader format of ``path`` (ASE's names, plus ``pacemaker-pickle``)."""
    if path.name.endswith(PICKLE_SUFFIXES):
        return PACEMAKER_PICKLE
    try:
        fmt = filetype(str(path), guess=True)
    except UnknownFileTypeError as err:
        raise FileError(f"unknown or empty file ({err})") from err
    except READ_ERRORS as err:
        raise FileError(f"cannot determine the format: {err}") from err
    if fmt is None:
        raise FileError("unknown file format")
    return fmt


def sha256_file(path: Path) -> str:
    """sha256 of the file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_finished(path: Path, fmt: str) -> None:
    """Raise FileError if a DFT output lacks the marker of a finished run."""
    marker = FINISHED_MARKERS.get(fmt)
    if marker is None:
        return
    tail, keep = b"", 8192
    with open_with_compression(str(path), "rb") as fh:
        if get_compression(str(path))[1] is None:  # plain file: only read the end
            fh.seek(max(0, os.path.getsize(path) - keep))
        for block in iter(lambda: fh.read(1 << 20), b""):
            tail = (tail + block)[-keep:]
    if marker not in tail:
        raise FileError(
            f"the {fmt} file is incomplete: no {marker.decode()!r} at its end "
            "(the run did not finish or the file was cut)"
        )


def check_xyz_counts(path: Path, fmt: str) -> None:
    """Raise FileError if an (ext)xyz frame declares more atoms than lines follow.

    ASE skips a frame by reading its declared number of lines, so a header claiming
    10^11 atoms would keep it busy for hours; this pass reads each line once.
    """
    if fmt not in ("extxyz", "xyz"):
        return
    with open_with_compression(str(path), "rb") as fh:
        frame = 0
        for line in fh:
            try:
                declared = int(line)
            except ValueError:
                return  # not a count line: the parser reports it properly
            if declared < 0:
                return
            # the comment line and the atom lines must follow
            missing = declared + 1 - sum(1 for _ in itertools.islice(fh, declared + 1))
            if missing > 0:
                raise FileError(f"frame {frame} declares {declared} atoms but the file "
                                "ends before them (truncated file or wrong atom count)")
            frame += 1


def _iread_ase(path: Path, fmt: str, trust_pickle: bool) -> Iterator[ase.Atoms]:
    with warnings.catch_warnings():
        # ASE announces plugin moves (FHI-aims) on every read; not the user's concern here
        warnings.simplefilter("ignore", FutureWarning)
        yield from ase.io.iread(str(path), index=":", format=fmt)


def _iread_pacemaker(path: Path, fmt: str, trust_pickle: bool) -> Iterator[ase.Atoms]:
    if not trust_pickle:
        raise FileError(
            "refusing to unpickle: loading a pickle runs code stored in the file; "
            "pass --trust-pickle (trust_pickle=True) only for files from a trusted source"
        )
    import pandas as pd

    with open(path, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    df = pd.read_pickle(path, compression="gzip" if compressed else None)
    if not isinstance(df, pd.DataFrame) or "ase_atoms" not in df.columns:
        raise FileError("not a pacemaker DataFrame (no 'ase_atoms' column)")
    scalars = [c for c in df.columns if c not in ("ase_atoms", "forces", "energy")]
    for _, row in df.iterrows():
        atoms = row["ase_atoms"].copy()
        results = {k: row[k] for k in ("energy", "forces") if k in df.columns}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update({c: row[c] for c in scalars if _is_scalar(row[c])})
        yield atoms


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float, str))


READERS: dict[str, Callable[[Path, str, bool], Iterator[ase.Atoms]]] = {
    PACEMAKER_PICKLE: _iread_pacemaker,
}


def iread(
    path: Path,
    format: str | None = None,
    key_map: KeyMap = KeyMap(),
    trust_pickle: bool = False,
) -> Iterator[Frame]:
    """Yield every frame of ``path`` as a Frame, valid or with the reason it is not.

    File-level problems (unknown format, incomplete run, refused pickle) raise FileError.
    A parse error mid-file ends the file with one Frame carrying the error.
    """
    fmt = format or detect_format(path)
    try:
        check_finished(path, fmt)
        check_xyz_counts(path, fmt)
    except READ_ERRORS as err:
        raise FileError(f"cannot read: {type(err).__name__}: {err}") from err
    reader = READERS.get(fmt, _iread_ase)
    frames = reader(path, fmt, trust_pickle)
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            break
        except FileError:
            raise
        except Exception as err:  # noqa: BLE001 - any parser failure is reported, not raised
            reason = f"cannot parse as {fmt}: {type(err).__name__}: {err}".strip()
            if index == 0:
                raise FileError(reason) from err
            yield Frame(index, error=reason + " (this frame and any after it are skipped)")
            return
        try:
            yield Frame(index, config=Configuration.from_atoms(atoms, key_map))
        except FrameError as err:
            yield Frame(index, error=str(err))
        index += 1

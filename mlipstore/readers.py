"""Reading DFT outputs, frame by frame: one reader per format behind one ``iread``.

Everything ASE reads goes through ``ase.io.iread`` (VASP OUTCAR/vasprun.xml, Quantum
ESPRESSO pw.x, FHI-aims, ASE db, ...), compressed files included. extxyz has a fast
reader that gives exactly ASE's result (``extxyz.py``); pacemaker's pickled DataFrames
have their own reader, which refuses to unpickle unless trusted.
"""

from __future__ import annotations

import codecs
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

from .configuration import Configuration, FrameError, KeyMap, Labels
from .extxyz import iread_labels

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
    ends_file: bool = False  # a parse error: no frame after this one is read


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


def check_xyz_frames(path: Path, fmt: str, every: int | None = None
                     ) -> tuple[bool, list[int]]:
    """Vet the frame structure of an (ext)xyz file the way ASE's extxyz reader does
    before it reads anything. Returns whether only ASE can read the file (cell vectors
    as VEC pseudo-atoms, or lone carriage returns, which ASE takes for line breaks) and,
    with ``every``, the byte offsets of frames 0, every, 2 * every, ... of a plain file.

    Raises FileError if a frame declares more atoms than lines follow (ASE would skip
    10^11 lines for a header that claims so), and for extxyz if the text is not UTF-8 or
    a frame does not start with its atom count: ASE rejects such a file whole.
    """
    if fmt not in ("extxyz", "xyz"):
        return False, []
    lone_cr = _scan_bytes(path, check_utf8=fmt == "extxyz")
    if lone_cr or get_compression(str(path))[1] is not None:
        every = None  # byte offsets only where a reader can seek to them
    vec = "VEC" if lone_cr else b"VEC"
    has_vec, starts = False, []
    with open_with_compression(str(path), "r" if lone_cr else "rb") as fh:
        frame, start, line = 0, 0, fh.readline()
        while line.strip():
            if every and frame % every == 0:
                starts.append(start)
            try:
                declared = int(line)
            except ValueError:
                if fmt == "xyz":
                    return lone_cr, []  # ASE's xyz reader reports it when it gets there
                raise FileError(f"frame {frame} does not start with its number of atoms "
                                f"(found {line[:40]!r})") from None
            # the comment line and the atom lines must follow
            need = max(declared, 0) + 1
            lines = itertools.islice(fh, need)
            # a list is quicker to count; a huge claimed count must not fill memory
            got = len(list(lines)) if need <= 1 << 16 else sum(1 for _ in lines)
            if got < need:
                raise FileError(f"frame {frame} declares {declared} atoms but the file "
                                "ends before them (truncated file or wrong atom count)")
            start = fh.tell() if every else 0
            line = fh.readline()
            while line.lstrip().startswith(vec):
                has_vec, line = True, fh.readline()
            frame += 1
    return has_vec or lone_cr, starts


def _scan_bytes(path: Path, check_utf8: bool) -> bool:
    """Whether the file has a carriage return that does not end a line (may say so
    wrongly for a CRLF split between blocks; then ASE reads, which is only slower).
    Raises FileError if ``check_utf8`` and the bytes are not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lone_cr, offset = False, 0
    with open_with_compression(str(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            # `in` is a fast byte search; counting only where there is a CR at all
            if not lone_cr and b"\r" in block:
                lone_cr = block.count(b"\r") != block.count(b"\r\n")
            # ASCII is UTF-8: decode only other blocks, or one after a cut character
            if check_utf8 and not (block.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as err:
                    raise FileError(f"not UTF-8 text (byte {offset + err.start})") from None
            offset += len(block)
    if check_utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise FileError("not UTF-8 text (cut in a multi-byte character at the end)"
                            ) from None
    return lone_cr


def _iread_ase(path: Path, fmt: str, trust_pickle: bool) -> Iterator[Labels]:
    with warnings.catch_warnings():
        # ASE announces plugin moves (FHI-aims) on every read; not the user's concern here
        warnings.simplefilter("ignore", FutureWarning)
        for atoms in ase.io.iread(str(path), index=":", format=fmt):
            yield Labels.from_atoms(atoms)


def _iread_pacemaker(path: Path, fmt: str, trust_pickle: bool) -> Iterator[Labels]:
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
        yield Labels.from_atoms(atoms)


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float, str))


def _iread_extxyz(path: Path, fmt: str, trust_pickle: bool) -> Iterator[Labels]:
    return iread_labels(path)


READERS: dict[str, Callable[[Path, str, bool], Iterator[Labels]]] = {
    PACEMAKER_PICKLE: _iread_pacemaker,
    "extxyz": _iread_extxyz,
}


@dataclass(frozen=True)
class Chunk:
    """Frames of one file read as a unit: all of them, or (plain extxyz on the fast path)
    ``count`` frames from frame ``first``, which starts at byte ``offset``."""

    first: int = 0
    count: int | None = None
    offset: int = 0
    only_ase: bool = False


def plan(path: Path, fmt: str, frames_per_chunk: int | None = None) -> list[Chunk]:
    """Check the whole file (FileError if it cannot be read) and split it into chunks
    of ``frames_per_chunk`` frames where it can be (plain extxyz), else one chunk."""
    try:
        check_finished(path, fmt)
        only_ase, starts = check_xyz_frames(path, fmt, frames_per_chunk)
    except READ_ERRORS as err:
        raise FileError(f"cannot read: {type(err).__name__}: {err}") from err
    if only_ase or fmt != "extxyz" or len(starts) < 2:
        return [Chunk(only_ase=only_ase)]
    return [Chunk(k * frames_per_chunk, frames_per_chunk, offset)
            for k, offset in enumerate(starts)]


def iread_chunk(path: Path, fmt: str, chunk: Chunk, key_map: KeyMap = KeyMap(),
                trust_pickle: bool = False) -> Iterator[Frame]:
    """The frames of one chunk of ``path`` (see ``iread``)."""
    if chunk.count is not None:
        frames = iread_labels(path, chunk.offset, chunk.count)
    else:
        reader = _iread_ase if chunk.only_ase else READERS.get(fmt, _iread_ase)
        frames = reader(path, fmt, trust_pickle)
    index = chunk.first
    while True:
        try:
            labels = next(frames)
        except StopIteration:
            break
        except FileError:
            raise
        except Exception as err:  # noqa: BLE001 - any parser failure is reported, not raised
            reason = f"cannot parse as {fmt}: {type(err).__name__}: {err}".strip()
            if index == 0:
                raise FileError(reason) from err
            yield Frame(index, error=reason + " (this frame and any after it are skipped)",
                        ends_file=True)
            return
        try:
            yield Frame(index, config=Configuration.from_labels(labels, key_map))
        except FrameError as err:
            yield Frame(index, error=str(err))
        index += 1


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
    for chunk in plan(path, fmt):
        yield from iread_chunk(path, fmt, chunk, key_map, trust_pickle)

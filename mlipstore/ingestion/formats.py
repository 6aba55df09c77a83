"""Reading DFT outputs, frame by frame: one reader per format behind one ``iread``.

Everything ASE reads goes through ``ase.io.iread`` (VASP OUTCAR/vasprun.xml, Quantum
ESPRESSO pw.x, FHI-aims, ASE db, ...), compressed files included. extxyz has a fast
reader that gives exactly ASE's result (``extxyz.py``); pacemaker's pickled DataFrames
have their own reader, which refuses to unpickle unless trusted.

Each format is one ``InputFormat`` record in ``INPUT_FORMATS``: its reader, its
``StepRule`` and the file-name suffixes that name it.

Interrupted runs. A VASP OUTCAR or vasprun.xml, pw.x or FHI-aims output without the line
a finished run ends with (``StepRule.finished``) was cut: wall-time limit, killed job,
full disk. Its complete ionic steps are still read, as frames with ``run_finished`` False; the step
it was cut in, if ASE returns it, is a Frame with ``cut`` True and the reason. A step is
complete by the file's own say, one rule per format (``StepRule``), counted by a line
scan of a cut file only (a finished file is read as before):

- vasp-out: its line "energy  without entropy=", 4 lines after "FREE ENERGIE OF THE
  ION-ELECTRON SYSTEM", is written: ASE's step ends there, after forces and stress.
- vasp-xml: its ``</calculation>`` is written.
- espresso-out: a step (ASE's image: from "Program PWSCF" or "ATOMIC_POSITIONS" to the
  next, counted only if it holds a result line, as ASE does) is complete once the line
  that starts the next one, or the timing report ("init_run"), is written: pw.x prints
  these only after the step's energy, forces and, when the run computes it, stress.
- aims-output: after its "Total atomic forces", the line "Begin self-consistency loop:
  Re-initialization" (the next step) or "Final output of selected total energy values"
  (the run's end) is written: aims prints these after the step's energy, forces, stress
  and MD structure block (which ASE takes the positions of an MD step from).

A line counts once its newline is written. A cut file without one complete step is a
FileError; ``require_finished`` makes every cut file one.
"""

from __future__ import annotations

import codecs
import itertools
import lzma
import os
import re
import tempfile
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

from ..errors import FileError
from ..store.configuration import STANDARD_KEYS, Configuration, FrameError, KeyMap, RawFrame
from ..store.method import Method
from .extxyz import iread_labels
from .methods import aims_output, espresso_out, vasp_out, vasp_xml

PACEMAKER_PICKLE = "pacemaker-pickle"

@dataclass(frozen=True)
class StepRule:
    """How a DFT output shows that the run finished, and which of its steps are complete.

    A step ends at a line holding one of ``ends`` (once a line holding one of ``needs``
    has come since the last such line; empty: always), or ``after`` lines later, that
    line included with its newline. The lines are those ASE's reader splits steps by,
    or ones the program prints only after all of a step's output (module docstring).
    """

    finished: bytes  # the last line a finished run writes
    ends: tuple[bytes, ...]
    needs: tuple[bytes, ...] = ()
    after: int = 0
    read_kwargs: tuple[tuple[str, object], ...] = ()  # for ASE's reader, on a cut file


# what reading a damaged (compressed) file raises before any parser sees it
READ_ERRORS = (OSError, EOFError, UnicodeDecodeError, zlib.error, lzma.LZMAError)


@dataclass
class Frame:
    """One frame of a source file: a valid configuration or the reason it is not."""

    index: int
    config: Configuration | None = None
    error: str | None = None
    ends_file: bool = False  # a parse error: no frame after this one is read
    run_finished: bool = True  # False: a complete step of a run that was cut later
    cut: bool = False  # the step the run was cut in (error says what is missing)


def detect_format(path: Path) -> str:
    """The reader format of ``path`` (ASE's names, plus ``pacemaker-pickle``)."""
    for record in INPUT_FORMATS.values():
        if record.suffixes and path.name.endswith(record.suffixes):
            return record.name
    try:
        fmt = filetype(str(path), guess=True)
    except UnknownFileTypeError as err:
        raise FileError(f"unknown or empty file ({err})") from err
    except READ_ERRORS as err:
        raise FileError(f"cannot determine the format: {err}") from err
    if fmt is None:
        raise FileError("unknown file format")
    return fmt


def is_finished(path: Path, fmt: str) -> bool:
    """Whether a DFT output ends with the marker of a finished run (True for formats
    without one). Reads only the last 8 KiB of a plain file."""
    steps = _steps(fmt)
    if steps is None:
        return True
    tail, keep = b"", 8192
    with open_with_compression(str(path), "rb") as fh:
        if get_compression(str(path))[1] is None:  # plain file: only read the end
            fh.seek(max(0, os.path.getsize(path) - keep))
        for block in iter(lambda: fh.read(1 << 20), b""):
            tail = (tail + block)[-keep:]
    return steps.finished in tail


def _incomplete(fmt: str) -> str:
    return (f"the {fmt} file is incomplete: no {_steps(fmt).finished.decode()!r} at its "
            "end (the run did not finish or the file was cut)")


def complete_steps(path: Path, fmt: str) -> tuple[int, int]:
    """The number of complete steps of a (cut) DFT output by its format's ``StepRule``, and
    the byte offset (of the decompressed text) where the last of them ends. One pass."""
    rule = _steps(fmt)
    ends, needs = _any_of(rule.ends), _any_of(rule.needs)
    steps = end = offset = 0
    pending = None  # lines to come before the step in progress ends
    has_result = not rule.needs
    with open_with_compression(str(path), "rb") as fh:
        for line in fh:
            offset += len(line)
            if pending is not None:
                pending -= 1
            elif ends.search(line):
                if has_result:
                    pending = rule.after
                has_result = not rule.needs
            elif not has_result and needs.search(line):
                has_result = True
            if pending == 0:
                if not line.endswith(b"\n"):
                    break  # the file ends inside the line
                steps, end, pending = steps + 1, offset, None
    return steps, end


def _any_of(markers: tuple[bytes, ...]) -> re.Pattern[bytes]:
    return re.compile(b"|".join(map(re.escape, markers)) or b"(?!)")


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


def _iread_ase(path: Path, fmt: str, trust_pickle: bool, **read_kwargs) -> Iterator[RawFrame]:
    with warnings.catch_warnings():
        # ASE announces plugin moves (FHI-aims) on every read; not the user's concern here
        warnings.simplefilter("ignore", FutureWarning)
        for atoms in ase.io.iread(str(path), index=":", format=fmt, **read_kwargs):
            yield RawFrame.from_atoms(atoms)


def _iread_pacemaker(path: Path, fmt: str, trust_pickle: bool) -> Iterator[RawFrame]:
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
    weights = {theirs: ours for ours, names in DATAFRAME_WEIGHTS.items() for theirs in names
               if theirs in df.columns}
    scalars = [c for c in df.columns if c not in ("ase_atoms", "forces", "energy", *weights)]
    for _, row in df.iterrows():
        atoms = row["ase_atoms"].copy()
        results = {k: row[k] for k in ("energy", "forces") if k in df.columns
                   and not _missing(row[k])}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update({c: row[c] for c in scalars
                           if _is_scalar(row[c]) and not _missing(row[c])})
        atoms.info.update({ours: row[theirs] for theirs, ours in weights.items()
                           if not _missing(row[theirs])})
        yield RawFrame.from_atoms(atoms)


# per-configuration loss weights: the store's name -> the DataFrame columns of pacemaker
# (w_forces: one per atom) and GRACE (gracemaker) that hold them
DATAFRAME_WEIGHTS = {
    "energy_weight": ("w_energy", "energy_weight"),
    "forces_weight": ("w_forces", "force_weight"),
    "virial_weight": ("virial_weight",),
}


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float, str))


def _missing(value) -> bool:
    """None, or a float NaN (pandas' missing value)."""
    return value is None or (isinstance(value, float) and value != value)


def _iread_extxyz(path: Path, fmt: str, trust_pickle: bool) -> Iterator[RawFrame]:
    return iread_labels(path)


@dataclass(frozen=True)
class InputFormat:
    """What mlipstore knows of one input format (ASE's name): its reader (None: ASE's
    ``iread``, keyword arguments ``steps.read_kwargs`` on a cut file), how its runs show
    that they finished and which of their steps are complete (None: the format has no
    such line), file-name suffixes that name it before ASE's detection, and the reader of
    the DFT method its files state (``methods``; None: the format states none)."""

    name: str
    reader: Callable[[Path, str, bool], Iterator[RawFrame]] | None = None
    steps: StepRule | None = None
    suffixes: tuple[str, ...] = ()
    method: Callable[[Path], Method] | None = None


# The formats that carry DFT labels, one record each. In a directory walk only these are
# picked up, so inputs such as POSCAR, INCAR or README beside the outputs are skipped,
# not rejected; any other format ASE reads can still be given explicitly (--format).
INPUT_FORMATS = {f.name: f for f in [
    InputFormat("vasp-out", steps=StepRule(
        b"General timing and accounting",
        ends=(b"FREE ENERGIE OF THE ION-ELECTRON SYSTEM",), after=4), method=vasp_out),
    InputFormat("vasp-xml", steps=StepRule(b"</modeling>", ends=(b"</calculation>",)),
                method=vasp_xml),
    InputFormat("espresso-out", steps=StepRule(
        b"JOB DONE", ends=(b"Program PWSCF", b"ATOMIC_POSITIONS", b"init_run     :"),
        needs=(b"!    total energy", b"Forces acting on atoms", b"total   stress",
               b"Magnetic moment per site", b"End of self-consistent calculation",
               b"End of band structure calculation")), method=espresso_out),
    # ASE refuses an aims output without "Have a nice day." unless non_convergence_ok
    InputFormat("aims-output", steps=StepRule(
        b"Have a nice day", ends=(b"Begin self-consistency loop: Re-initialization",
                                  b"Final output of selected total energy values"),
        needs=(b"Total atomic forces",), read_kwargs=(("non_convergence_ok", True),)),
        method=aims_output),
    InputFormat("extxyz", reader=_iread_extxyz),
    *(InputFormat(name) for name in ("db", "traj", "castep-castep", "gpaw-out",
                                     "cp2k-restart", "gaussian-out", "orca-output")),
    InputFormat(PACEMAKER_PICKLE, reader=_iread_pacemaker, suffixes=(
        ".pckl.gzip", ".pckl.gz", ".pkl.gz", ".pckl", ".pkl", ".pickle")),
]}


def stated_method(path: Path, fmt: str, given: Method | None = None) -> Method | None:
    """The DFT method ``path`` states (None for a format that states none), its gaps
    filled from ``given`` (the user's); FileError if ``given`` contradicts the file."""
    record = INPUT_FORMATS.get(fmt)
    if record is None or record.method is None:
        return given
    try:
        return record.method(path).filled_from(given, "the file")
    except ValueError as err:
        raise FileError(str(err)) from err
    except READ_ERRORS as err:
        raise FileError(f"cannot read: {type(err).__name__}: {err}") from err


def _steps(fmt: str) -> StepRule | None:
    record = INPUT_FORMATS.get(fmt)
    return record.steps if record is not None else None


@dataclass(frozen=True)
class Chunk:
    """Frames of one file read as a unit: all of them, or (plain extxyz on the fast path)
    ``count`` frames from frame ``first``, which starts at byte ``offset``. A DFT output
    of a run that was cut is one chunk with ``run_finished`` False."""

    first: int = 0
    count: int | None = None
    offset: int = 0
    only_ase: bool = False
    run_finished: bool = True


def plan(path: Path, fmt: str, frames_per_chunk: int | None = None,
         require_finished: bool = False) -> list[Chunk]:
    """Check the whole file (FileError if it cannot be read) and split it into chunks
    of ``frames_per_chunk`` frames where it can be (plain extxyz), else one chunk.

    A DFT output without the marker of a finished run is one chunk with ``run_finished``
    False; it is a FileError with ``require_finished``, or without one complete step."""
    try:
        if not is_finished(path, fmt):
            if require_finished:
                raise FileError(_incomplete(fmt))
            if complete_steps(path, fmt)[0] == 0:
                raise FileError(_incomplete(fmt) + NO_COMPLETE_STEP)
            return [Chunk(run_finished=False)]
        only_ase, starts = check_xyz_frames(path, fmt, frames_per_chunk)
    except READ_ERRORS as err:
        raise FileError(f"cannot read: {type(err).__name__}: {err}") from err
    if only_ase or fmt != "extxyz" or len(starts) < 2:
        return [Chunk(only_ase=only_ase)]
    return [Chunk(k * frames_per_chunk, frames_per_chunk, offset)
            for k, offset in enumerate(starts)]


def iread_chunk(path: Path, fmt: str, chunk: Chunk, key_map: KeyMap = STANDARD_KEYS,
                trust_pickle: bool = False, method: Method | None = None) -> Iterator[Frame]:
    """The frames of one chunk of ``path`` (see ``iread``), computed with ``method``."""
    if not chunk.run_finished:
        yield from _iread_cut_run(path, fmt, key_map, method)
        return
    if chunk.count is not None:
        frames = iread_labels(path, chunk.offset, chunk.count)
    else:
        record = INPUT_FORMATS.get(fmt)
        reader = (record.reader if record is not None and not chunk.only_ase else None) \
            or _iread_ase
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
            yield Frame(index, config=Configuration.from_labels(labels, key_map, method))
        except FrameError as err:
            yield Frame(index, error=str(err))
        index += 1


NO_COMPLETE_STEP = "; the run was cut before its first complete step"


def _iread_cut_run(path: Path, fmt: str, key_map: KeyMap, method: Method | None
                   ) -> Iterator[Frame]:
    """The complete steps of a cut run (``run_finished`` False), then the step it was cut
    in, if ASE returns it, as an error Frame with ``cut``. Should ASE fail before it has
    returned all complete steps (its OUTCAR and FHI-aims readers parse every step before
    returning one), they are read again from a copy of the file's complete part alone."""
    steps, end = complete_steps(path, fmt)
    if steps == 0:
        raise FileError(_incomplete(fmt) + NO_COMPLETE_STEP)
    read_kwargs = dict(_steps(fmt).read_kwargs)
    kept = (f"the {steps} complete steps before it are kept" if steps > 1
            else "the complete step before it is kept")
    labels_of = _iread_ase(path, fmt, False, **read_kwargs)
    index, stress, copy, failed = 0, False, None, ""
    try:
        while True:
            try:
                labels = next(labels_of)
            except StopIteration:
                if failed and index == steps:  # the copy is read: report the failure
                    yield Frame(index, error=f"the run was cut during this step ({failed}); "
                                f"{kept}", ends_file=True, run_finished=False, cut=True)
                return
            except Exception as err:  # noqa: BLE001 - any parser failure is reported
                reason = f"cannot parse as {fmt}: {type(err).__name__}: {err}".strip()
                if index < steps and copy is None:
                    copy = tempfile.TemporaryDirectory()
                    part = _complete_part(path, end, Path(copy.name))
                    labels_of = itertools.islice(
                        _iread_ase(part, fmt, False, **read_kwargs), index, None)
                    failed = reason
                    continue
                if index == 0:
                    raise FileError(reason) from err
                error = (f"the run was cut during this step ({reason}); {kept}"
                         if index == steps else
                         reason + " (this frame and any after it are skipped)")
                yield Frame(index, error=error, ends_file=True, run_finished=False,
                            cut=index == steps)
                return
            if index == steps:
                yield Frame(index, error=f"the run was cut during this step "
                            f"({_cut_lacks(labels, key_map, stress)}); {kept}",
                            run_finished=False, cut=True)
                return
            try:
                config = Configuration.from_labels(labels, key_map, method)
            except FrameError as err:
                yield Frame(index, error=str(err), run_finished=False)
            else:
                stress = config.stress is not None
                yield Frame(index, config=config, run_finished=False)
            index += 1
    finally:
        if copy is not None:
            copy.cleanup()


def _cut_lacks(labels: RawFrame, key_map: KeyMap, stress: bool) -> str:
    """What the step a run was cut in lacks, as ASE read it (``stress``: the step
    before it has a stress)."""
    forces = labels.lookup(key_map.forces)
    if labels.lookup(key_map.energy) is None:
        return "no energy yet"
    if forces is None:
        return "no forces yet"
    if getattr(forces, "shape", None) != (len(labels.numbers), 3):
        return "forces block partial"
    if stress and labels.lookup(key_map.stress) is None:
        return "no stress yet, though the step before it has one"
    return "the file ends before the line that closes the step"


def _complete_part(path: Path, end: int, folder: Path) -> Path:
    """A copy of the first ``end`` bytes of the (decompressed) file, in ``folder``."""
    part, left = folder / "complete_part", end
    with open_with_compression(str(path), "rb") as src, open(part, "wb") as dst:
        while left > 0 and (block := src.read(min(left, 1 << 20))):
            dst.write(block)
            left -= len(block)
    return part


def iread(
    path: Path,
    format: str | None = None,
    key_map: KeyMap = STANDARD_KEYS,
    trust_pickle: bool = False,
    require_finished: bool = False,
    method: Method | None = None,
) -> Iterator[Frame]:
    """Yield every frame of ``path`` as a Frame, valid or with the reason it is not; each
    configuration carries the DFT method the file states, gaps filled from ``method``.

    File-level problems (unknown format, refused pickle, a run cut before its first
    complete step, or any cut run with ``require_finished``) raise FileError. A parse
    error mid-file ends the file with one Frame carrying the error. A cut run yields its
    complete steps (``run_finished`` False), then the step it was cut in (``cut``).
    """
    fmt = format or detect_format(path)
    chunks = plan(path, fmt, require_finished=require_finished)
    method = stated_method(path, fmt, method)
    for chunk in chunks:
        yield from iread_chunk(path, fmt, chunk, key_map, trust_pickle, method)

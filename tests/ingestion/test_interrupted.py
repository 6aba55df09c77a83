"""A DFT run cut short (wall-time limit, killed job, full disk): its complete steps are
read, marked ``run_finished`` False, bit for bit as in the uncut file; the step it was
cut in never passes. Every interruptible shared DFT output is cut at many positions.

The ground truth is derived here from the uncut file, per format, independently of the
reader: for each step, where the last line ASE reads for it ends (``data_end``: no cut
before it may keep the step) and where the line ends that shows the program went past
the step (``done``: a cut there or later keeps it).
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
import re
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest

from helpers import DFT, needs_shared
from mlipstore.ingestion import formats as readers
from mlipstore.ingestion.formats import FileError
from mlipstore.ingestion.ingest import ingest
from mlipstore.store.configuration import Configuration
from mlipstore.store.store import Store

pytestmark = needs_shared

AIMS_SCF = "dpdata/tests/fhi_aims/out_scf"
CASES = {  # name: (file under DFT, format)
    "outcar-ti": ("dpdata/tests/poscars/Ti-O-Ti-v6/OUTCAR", "vasp-out"),
    "outcar-h2o-md": ("dpdata/tests/poscars/OUTCAR.h2o.md", "vasp-out"),
    "vasprun-ti-aimd": ("dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml", "vasp-xml"),
    "pw-md": ("q-e/test-suite/pw_md/benchmark.out.git.inp=md.in.args=1", "espresso-out"),
    "pw-scf": ("dpdata/tests/qe.scf/02.out", "espresso-out"),
    "aims-scf": (AIMS_SCF, "aims-output"),
    "aims-md-two-steps": (None, "aims-output"),  # built from out_scf (two_step_aims)
}
RANDOM_CUTS = 120  # random byte positions, and as many random line ends, per long file
EVERY_LINE = 2500  # a file of one step and at most this many lines is cut at every line


# --- ground truth, per format: (data_end, done) byte offsets of each step ----------------

def _first_after(lines: list[bytes], start: int, *keys: bytes) -> int:
    return next(i for i in range(start, len(lines)) if any(k in lines[i] for k in keys))


def truth_outcar(lines, ends):
    # ASE's step ends 4 lines after "FREE ENERGIE ...", at the energy it reads; the
    # forces ("POSITION ... TOTAL-FORCE") and stress ("in kB") come before it
    steps = []
    for i, line in enumerate(lines):
        if b"FREE ENERGIE OF THE ION-ELECTRON SYSTEM" in line:
            assert b"energy  without entropy=" in lines[i + 4]
            steps.append((ends[i + 4], ends[i + 4]))
    return steps


def truth_vasprun(lines, ends):
    return [(ends[i], ends[i]) for i, line in enumerate(lines) if b"</calculation>" in line]


def truth_pw(lines, ends):
    # data: "!    total energy", forces up to "Total force =", then the stress rows when
    # the step has "total   stress"; done: the next step's positions or the timing report
    steps = []
    for i, line in enumerate(lines):
        if line.startswith(b"!    total energy"):
            last = _first_after(lines, i, b"Total force =")
            nxt = _first_after(lines, last, b"ATOMIC_POSITIONS", b"init_run", b"total   stress")
            if b"total   stress" in lines[nxt]:
                last = nxt + 3
                nxt = _first_after(lines, last, b"ATOMIC_POSITIONS", b"init_run")
            steps.append((ends[last], ends[nxt]))
    return steps


def truth_aims(lines, ends):
    # data: the forces block (and, in MD, the structure block printed after it, which
    # ASE takes the positions from); done: the next SCF loop or the final summary
    n_atoms = int(next(line for line in lines if b"| Number of atoms" in line).split()[-1])
    done_keys = (b"Begin self-consistency loop: Re-initialization",
                 b"Final output of selected total energy values")
    steps = []
    for i, line in enumerate(lines):
        if b"Total atomic forces" in line:
            last = i + n_atoms
            nxt = _first_after(lines, last, b"Next atomic structure:", *done_keys)
            if b"Next atomic structure:" in lines[nxt]:
                last = nxt
                nxt = _first_after(lines, last + 1, *done_keys)
            steps.append((ends[last], ends[nxt]))
    return steps


TRUTH = {"vasp-out": truth_outcar, "vasp-xml": truth_vasprun,
         "espresso-out": truth_pw, "aims-output": truth_aims}


# --- the files -----------------------------------------------------------------------------

def two_step_aims() -> bytes:
    """out_scf made a two-step MD run: after each step's forces the structure block aims'
    MD writes (ASE reads the step's positions from it); the second step starts with
    "Re-initialization" and has other positions, energy and forces."""
    lines = (DFT / AIMS_SCF).read_bytes().splitlines(keepends=True)
    first = _first_after(lines, 0, b"Begin self-consistency loop: Initialization")
    forces = _first_after(lines, first, b"Total atomic forces")
    final = _first_after(lines, forces, b"Final output of selected total energy values")

    def md_block(shift: float) -> list[bytes]:
        cell = ["0.0 1.7916 1.7916", "1.7916 0.0 1.7916", "1.7916 1.7916 0.0"]
        atoms = [(0.0, "B"), (0.8958 + shift, "N")]
        text = ["  Molecular dynamics: Attempting to update all nuclear coordinates.", "",
                "  Atomic structure (and velocities) as used in the preceding time step:",
                "                         x [A]             y [A]             z [A]"]
        text += [f"            lattice_vector   {v}" for v in cell]
        text += [f"            atom   {x:.8f}   {x:.8f}   {x:.8f}  {s}" for x, s in atoms]
        text += ["  Next atomic structure:", ""]
        return [t.encode() + b"\n" for t in text]

    def step(second: bool) -> list[bytes]:
        block = lines[first:forces + 3] + md_block(0.01 * second) + lines[forces + 3:final]
        if second:
            swap = ((b"Initialization.", b"Re-initialization."),
                    (b"0.847419868476384E-10", b"0.947419868476384E-10"),
                    (b"-0.215215685892915E+04", b"-0.215215685892925E+04"))
            for old, new in swap:
                block = [line.replace(old, new) for line in block]
        return block

    return b"".join(lines[:first] + step(False) + step(True) + lines[final:])


def source(name: str, tmp_path: Path) -> Path:
    relpath, _ = CASES[name]
    if relpath is not None:
        return DFT / relpath
    path = tmp_path / "full" / "aims.out"
    path.parent.mkdir()
    path.write_bytes(two_step_aims())
    return path


def same(got: Configuration, want: Configuration) -> bool:
    """Equal bit for bit, stress None exactly where it is None in ``want``."""
    arrays = ("numbers", "positions", "cell", "pbc", "forces")
    return (all(np.array_equal(getattr(got, a), getattr(want, a)) for a in arrays)
            and all(getattr(got, a).dtype == getattr(want, a).dtype for a in arrays)
            and got.energy == want.energy and got.free_energy == want.free_energy
            and (got.stress is None) == (want.stress is None)
            and (want.stress is None or np.array_equal(got.stress, want.stress))
            and got.id == want.id)


def cut_positions(data: bytes, ends: list[int], steps, every_line: bool, seed: int
                  ) -> list[int]:
    """Where to cut: random bytes and line ends (every line end of a short file), and
    around each step's last data line and the line that completes it: just before it,
    inside it (1 byte of it; all but its newline), just after it."""
    rng = random.Random(seed)
    cuts = set(ends) if every_line else set(rng.sample(ends, min(RANDOM_CUTS, len(ends))))
    cuts |= set(rng.sample(range(1, len(data)), RANDOM_CUTS))
    starts = dict(zip(ends, [0, *ends[:-1]], strict=True))  # line end -> line start
    for data_end, done in steps:
        for end in (data_end, done):
            cuts |= {starts[end], starts[end] + 1, end - 1, end}
    return sorted(c for c in cuts if 0 < c < len(data))


# --- the tests -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_cut_run_keeps_exactly_its_complete_steps(tmp_path, record_property, name):
    full_path = source(name, tmp_path)
    fmt = CASES[name][1]
    data = full_path.read_bytes()
    full = list(readers.iread(full_path, fmt))
    assert all(f.config is not None and f.run_finished and not f.cut for f in full)
    lines = data.splitlines(keepends=True)
    ends = list(itertools.accumulate(map(len, lines)))
    steps = TRUTH[fmt](lines, ends)
    assert len(steps) == len(full) and all(d <= c for d, c in steps), steps
    marker = readers.INPUT_FORMATS[fmt].steps.finished
    marker_at = data.rindex(marker)
    every_line = len(steps) == 1 and len(lines) <= EVERY_LINE
    cuts = [c for c in cut_positions(data, ends, steps, every_line, seed=len(data))
            if c < marker_at + len(marker)]
    line_start = data.rfind(b"\n", 0, marker_at) + 1
    cuts = sorted({*cuts, line_start})  # just before the marker's line: every step kept

    cut = tmp_path / full_path.name
    cut.write_bytes(data)
    tally = {"cuts": 0, "steps kept": 0, "cut steps reported": 0, "file errors": 0}
    for c in reversed(cuts):  # shortening one file is quicker than writing each cut
        os.truncate(cut, c)
        expected = sum(done <= c for _, done in steps)
        at = f"{name} cut at byte {c} (expected {expected} of {len(steps)} steps)"
        tally["cuts"] += 1
        with pytest.raises(FileError, match="incomplete"):
            readers.plan(cut, fmt, require_finished=True)
        if expected == 0:
            with pytest.raises(FileError, match="cut before its first complete step"):
                list(readers.iread(cut, fmt))
            tally["file errors"] += 1
            continue
        frames = list(readers.iread(cut))  # the format detected from the cut file
        kept = [f for f in frames if not f.cut]
        assert [f.index for f in kept] == list(range(expected)), (at, tally, frames)
        assert all(f.config is not None and not f.run_finished for f in kept), (at, tally)
        assert all(same(f.config, full[f.index].config) for f in kept), (at, tally)
        # nothing after the kept steps but, at most, the step the run was cut in
        rest = frames[len(kept):]
        assert len(rest) <= 1 and expected < len(steps) or not rest, (at, tally, rest)
        for f in rest:
            assert f.index == expected and f.config is None and not f.run_finished, at
            assert "the run was cut during this step" in f.error, (at, f.error)
        tally["steps kept"] += len(kept)
        tally["cut steps reported"] += len(rest)
        if c == line_start:
            assert len(kept) == len(steps), (at, tally)
    note = (f"interrupted run {name}: {tally['cuts']} cuts tried, {tally['steps kept']} "
            f"complete steps kept, {tally['cut steps reported']} cut steps reported, "
            f"{tally['file errors']} cut before the first complete step")
    print(note)
    record_property("figure", note)  # shown at the end of the run (conftest)
    assert tally["steps kept"] and tally["file errors"], note


@pytest.mark.parametrize("name", sorted(CASES))
def test_finished_file_reads_as_before(tmp_path, name):
    path = source(name, tmp_path)
    fmt = CASES[name][1]
    assert readers.plan(path, fmt) == readers.plan(path, fmt, require_finished=True) \
        == [readers.Chunk()]
    frames = list(readers.iread(path, fmt, require_finished=True))
    again = list(readers.iread(path))
    assert len(frames) == len(again)
    assert all(same(a.config, b.config) for a, b in zip(frames, again, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        images = ase.io.read(path, index=":", format=fmt)
    assert len(frames) == len(images)
    for frame, atoms in zip(frames, images, strict=True):
        assert frame.error is None and frame.run_finished and not frame.cut
        assert same(frame.config, Configuration.from_atoms(
            atoms, method=readers.stated_method(path, fmt)))


def test_cut_inside_data_ase_fails_on_keeps_the_steps_before(tmp_path):
    """FHI-aims: ASE builds every step before returning one, so a cut step it cannot
    parse would lose the complete ones; they are read again from the complete part."""
    data = two_step_aims()
    full = tmp_path / "full.out"
    full.write_bytes(data)
    first = next(readers.iread(full)).config
    line = re.search(rb"\|   2 +-0\.847419868476385E-10", data[data.index(b"Re-init"):])
    cut = tmp_path / "cut.out"
    cut.write_bytes(data[:data.index(b"Re-init") + line.start() + 12])
    with warnings.catch_warnings(), pytest.raises(ValueError):
        warnings.simplefilter("ignore", FutureWarning)
        list(ase.io.iread(str(cut), format="aims-output", non_convergence_ok=True))
    frames = list(readers.iread(cut))
    assert len(frames) == 2 and same(frames[0].config, first) and not frames[0].run_finished
    assert frames[1].cut and frames[1].ends_file and "cannot parse" in frames[1].error
    assert "the complete step before it is kept" in frames[1].error


@pytest.mark.parametrize("name", ["outcar-h2o-md", "vasprun-ti-aimd", "pw-md",
                                  "aims-md-two-steps"])
def test_ingest_stores_the_complete_steps(tmp_path, name):
    full_path = source(name, tmp_path)
    fmt = CASES[name][1]
    data = full_path.read_bytes()
    lines = data.splitlines(keepends=True)
    steps = TRUTH[fmt](lines, list(itertools.accumulate(map(len, lines))))
    full = [f.config for f in readers.iread(full_path)]
    # a cut inside the last step's completing line: all steps before it are stored
    cut = tmp_path / "cut" / full_path.name
    cut.parent.mkdir()
    cut.write_bytes(data[:steps[-1][1] - 1])
    report = ingest([cut], Store(tmp_path / "store", create=True), workers=1)
    kept = len(steps) - 1
    assert report.new == kept and report.committed, report
    assert report.ok and all(r.cut and r.frame == kept for r in report.rejected), report
    table = Store(tmp_path / "store").scan(columns=["id", "run_finished"])
    assert set(table.column("id").to_pylist()) == {c.id for c in full[:kept]}
    assert set(table.column("run_finished").to_pylist()) == ({False} if kept else set())

    report = ingest([cut], Store(tmp_path / "strict", create=True), require_finished=True,
                    workers=1)
    assert report.new == 0 and not report.ok and "incomplete" in report.rejected[0].reason


def test_compressed_cut_outcar_where_ase_fails_reads_the_same(tmp_path):
    """ASE's OUTCAR reader builds every step before returning one: a cut inside the last
    step's energy line makes it fail; the complete steps are read from the complete part,
    decompressed from a .gz as from the plain file."""
    full_path = source("outcar-h2o-md", tmp_path)
    data = full_path.read_bytes()
    c = data.rindex(b"energy  without entropy=") + 30  # inside the number ASE reads
    plain, packed = tmp_path / "OUTCAR", tmp_path / "OUTCAR.gz"
    plain.write_bytes(data[:c])
    packed.write_bytes(gzip.compress(data[:c]))
    with pytest.raises(IndexError):
        list(ase.io.iread(str(plain), format="vasp-out"))
    full = [f.config for f in readers.iread(full_path)]
    for path in (plain, packed):
        frames = list(readers.iread(path, "vasp-out"))
        assert [f.index for f in frames] == [0, 1, 2] and frames[2].cut, frames
        assert all(same(f.config, want) for f, want in zip(frames[:2], full, strict=False))
        assert "IndexError" in frames[2].error and frames[2].ends_file

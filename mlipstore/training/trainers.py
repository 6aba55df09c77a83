"""The exported training data written for other trainers than pacemaker.

Input is the pacemaker DataFrame of ``export.pacemaker_frame`` (one row per configuration:
``name``, ``ase_atoms``, ``energy``, ``forces``, ``energy_corrected``, ``stress`` and, where
some configuration has them, ``w_energy``, per-atom ``w_forces`` and ``virial_weight``).
``FORMATS`` maps a format name to its writer ``(df, path) -> None``.

Extended XYZ for MACE, NequIP and Allegro (``write_extxyz``)
--------------------------------------------------------------
One frame per row; ``ase.io.read(path, index=":")`` gives back exactly the floats of the
DataFrame (see *Exact floats*). Key names are those of ``ExtxyzKeys``:

- ``REF_energy`` (info): ``energy_corrected``, the fit target (eV): the energy minus the
  per-element reference energies of ``df.attrs["mlipstore"]``, and minus the delta-learning
  baseline where one was used, so that it matches the forces and stress, which are DFT minus
  baseline. With MACE, pass ``--E0s average`` or zeros: the reference energies are already
  subtracted. Left out of a frame whose ``energy_corrected`` is NaN.
- ``REF_total_energy`` (info): the DFT total energy (``energy``) as provenance, and as an
  alternative target (MACE: ``--energy_key=REF_total_energy`` with ``--E0s`` set to the
  reference energies trains the same model). Written only where it is finite and only when
  no baseline was subtracted: with a baseline it is no longer consistent with the forces in
  the file, and a trainer pointed at it would fit a wrong potential. ``None`` in
  ``ExtxyzKeys`` leaves it out.
- ``REF_forces`` (per-atom array, eV/Angstrom); left out where the forces are all NaN.
- ``REF_stress`` (info, eV/Angstrom^3): the 6-vector in Voigt order xx yy zz yz xz xy with
  ASE's sign (positive = tensile), as stored; left out where the stress is unknown, which
  MACE reads as stress weight 0.
- ``config_energy_weight``, ``config_forces_weight``, ``config_stress_weight`` (info): the
  per-structure weights (from ``w_energy``, ``w_forces`` and ``virial_weight``) under
  MACE's names; left out where a configuration has none (MACE then uses 1). MACE has one
  force weight per structure, so per-atom ``w_forces`` must be constant within each
  structure, else ``ValueError`` (use ``weights="none"``, or GRACE, which takes per-atom
  weights). By default (``weights="mean_one"``) each kind is divided by its mean over the
  values written (the force weights over atoms), because MACE's losses are plain means of
  weight times squared error (weights not normalised), while pacemaker's weights sum to
  one over the data set: raw pacemaker weights would make every weight about 1/N, shift the
  energy/force balance by the number of atoms per structure, and make a configuration
  without a weight (1 in MACE) outweigh the others by a factor N. Rescaled, a configuration
  without a weight counts as an average one, and MACE's ``--energy_weight`` and
  ``--forces_weight`` keep their meaning. ``weights="as_given"`` writes the values unchanged.
  (A weight counts as missing where it is NaN / None; ``export.pacemaker_frame`` gives a
  configuration without a source weight the mean of the given ones.)
- ``config_type`` (info): the DataFrame's ``config_type`` column where it has one, else the
  configuration's store tags joined with ``+`` (the ``tags`` column), else left out (MACE:
  "Default"). ``mlipstore_id`` (info): the configuration id (``name``).
- ``Lattice`` (row vectors, written where the cell is not zero) and ``pbc`` (always).

No calculator is attached and no key is one of ASE's calculator property names: ASE's
extxyz reader moves info keys named ``energy``, ``free_energy``, ``stress`` (and per-atom
``forces``, ...) into a ``SinglePointCalculator``; with the ``REF_`` names they stay in
``atoms.info`` and ``atoms.arrays`` (``ExtxyzKeys`` refuses ASE's reserved names).

Exact floats: ASE's writer formats per-atom columns with ``%16.8f``, which loses bits, so
this module writes the text itself with ``repr`` (the shortest string that parses back to
the same double); ASE reads per-atom columns with ``float`` and comment-line numbers with
numpy's float parser, both correctly rounded. Strings that ASE would turn into numbers or
booleans (an id of digits only, ``T``) are written as ASE's ``_JSON`` values, which it
reads back as the same string.

GRACE (``grace_frame``, ``write_grace``)
----------------------------------------
GRACE (gracemaker, package ``tensorpotential``) reads a pickled, gzipped DataFrame like
pacemaker's. What it reads, verified in the installed tensorpotential 0.6.2.1 (paths under
``site-packages/tensorpotential``):

- target ``energy_corrected``, ``forces``, ``stress``, ``ase_atoms``:
  ``data/databuilder.py`` ``ReferenceEnergyForcesStressesDataBuilder`` (``energy_col``
  default ``ENERGY_CORRECTED_COL``; ``extract_from_row``). ``cli/data.py`` recomputes
  ``energy_corrected`` from ``energy`` only when ``input.yaml`` sets
  ``data::reference_energy``: leave it unset to train on this file's target (which also
  carries a baseline subtraction that a recomputation would drop).
- stress: eV/Angstrom^3 by default (``stress_units`` default ``"eV/A3"``, factor 1), ASE
  Voigt order and sign: GRACE computes ``virial = -stress * volume`` and reorders it itself.
  So the stress is passed as stored, no conversion. A (3, 3) stress is also accepted there;
  this module writes the 6-vector.
- weights ``energy_weight`` (per structure), ``force_weight`` (per atom: reshaped to
  (n_atoms, 1) and multiplied into each atom's squared force error; also what GRACE's own
  ``data/weighting.py`` produces) and ``virial_weight`` (per structure), names in
  ``constants.py`` ``DATA_*_WEIGHTS``. A column, where present, is read row by row with no
  default for a missing value; where absent GRACE uses 1 (energy, virial) and 1 per atom
  (forces, ``normalize_force_per_structure`` off, the ``cli/data.py`` default). GRACE's
  losses divide each term by the sum of its weights (``loss.py``, ``normalize_by_samples``
  default True), so the scale of each kind of weight does not matter, only the ratios.

Hence ``grace_frame`` renames ``w_energy`` -> ``energy_weight`` and ``w_forces`` ->
``force_weight`` (per atom in both; a scalar becomes one value per atom), keeps
``virial_weight``, and, because a NaN weight would make the loss NaN, gives a configuration
without a weight the mean of the given ones (over atoms for forces), which is GRACE's
default 1 when all given weights are 1. A configuration without stress gets a zero stress
and ``virial_weight`` 0: GRACE fails on a ``None`` stress when stress is fitted
(``None * volume``, checked against the installed code), and zeros with weight 0 are what
GRACE itself uses for non-periodic structures. ``energy_corrected`` or forces that are not
finite raise ``ValueError``: GRACE has no way to leave them out of the loss.

Assumed, not verified: NequIP/Allegro read the file through ``ase.io`` with
``key_mapping`` (``REF_energy: total_energy``, ``REF_forces: forces``, ``REF_stress:
stress``; nequip's ``from_dict`` turns a 6-vector stress into 3x3 in this Voigt order) and
use ASE's stress sign; they ignore the MACE weight keys. The GRACE documentation
(gracemaker.readthedocs.io) was not reachable; the GRACE conventions above come from its
code. MACE conventions are from ACEsuit/mace ``mace/data/utils.py`` (``config_from_atoms``,
``load_from_xyz``), ``mace/tools/torch_tools.py`` (``voigt_to_matrix``: (6,), (3, 3) or
(9,)) and ``mace/modules/loss.py``, read as source, not run.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ase.calculators.calculator import all_properties
from ase.data import chemical_symbols
from ase.io.extxyz import (
    PROPERTY_NAME_MAP,
    SPECIAL_3_3_KEYS,
    UNPROCESSED_KEYS,
    key_val_str_to_dict,
)
from ase.stress import full_3x3_to_voigt_6_stress

from .._io import atomic_write
from .export import write_pickle_gzip

Writer = Callable[[pd.DataFrame, "str | Path"], None]

# names ASE's extxyz reader treats specially: calculator properties (moved into a
# SinglePointCalculator), the frame's own keys, per-atom property aliases
_RESERVED = ({*all_properties, *SPECIAL_3_3_KEYS, *UNPROCESSED_KEYS, *PROPERTY_NAME_MAP,
              *PROPERTY_NAME_MAP.values(), "Properties", "pbc", "comment", "move_mask",
              "initial_charges", "masses", "momenta", "tags"})
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ExtxyzKeys:
    """The extxyz key names ``write_extxyz`` writes (defaults: MACE's conventions).

    ``energy_key``: the fit target ``energy_corrected`` (info, eV). ``total_energy_key``:
    the DFT total energy (info, eV), written only without a delta-learning baseline; None
    leaves it out. ``forces_key``: per-atom forces (eV/Angstrom). ``stress_key``: Voigt
    6-vector xx yy zz yz xz xy, ASE sign (eV/Angstrom^3). ``*_weight_key``: per-structure
    loss weights under MACE's ``config_<property>_weight`` names. ``config_type_key`` and
    ``id_key``: the configuration's type (MACE groups errors and ``config_type_weights``
    by it) and its mlipstore id.
    """

    energy_key: str = "REF_energy"
    total_energy_key: str | None = "REF_total_energy"
    forces_key: str = "REF_forces"
    stress_key: str = "REF_stress"
    energy_weight_key: str = "config_energy_weight"
    forces_weight_key: str = "config_forces_weight"
    stress_weight_key: str = "config_stress_weight"
    config_type_key: str = "config_type"
    id_key: str = "mlipstore_id"

    def __post_init__(self) -> None:
        names = [(f.name, getattr(self, f.name)) for f in fields(self)]
        used = [value for _, value in names if value is not None]
        for field, value in names:
            if value is None and field == "total_energy_key":
                continue
            if not isinstance(value, str) or not _KEY.fullmatch(value):
                raise ValueError(f"ExtxyzKeys.{field}={value!r}: a key must be a letter or _ "
                                 "followed by letters, digits or _")
            if value in _RESERVED:
                raise ValueError(f"ExtxyzKeys.{field}={value!r} is a name ASE's extxyz reader "
                                 "treats specially (it would move the value into a "
                                 "calculator or misread it); use e.g. 'REF_" + value + "'")
        duplicates = sorted({v for v in used if used.count(v) > 1})
        if duplicates:
            raise ValueError(f"ExtxyzKeys: the same key for two values: {duplicates}")


DEFAULT_KEYS = ExtxyzKeys()
WEIGHT_MODES = ("mean_one", "as_given", "none")


def write_extxyz(df: pd.DataFrame, path: str | Path, keys: ExtxyzKeys = DEFAULT_KEYS, *,
                 weights: str = "mean_one") -> None:
    """Write ``df`` (a pacemaker DataFrame) as extended XYZ for MACE / NequIP / Allegro,
    atomically (a failure leaves no file); see the module docstring for the keys.

    ``weights``: "mean_one" (each kind of weight divided by its mean), "as_given" or
    "none" (no weights written)."""
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights={weights!r}: one of {', '.join(WEIGHT_MODES)}")
    _require(df, ("name", "ase_atoms", "energy_corrected", "forces"))
    columns = list(df.columns)
    frames = [_Frame.of(dict(zip(columns, values, strict=True)), weights != "none")
              for values in df.itertuples(index=False, name=None)]
    scale = _weight_scales(frames, weights)
    baseline = "energy_baseline" in df.columns or \
        (df.attrs.get("mlipstore") or {}).get("baseline") is not None
    with atomic_write(path, "w") as fh:
        for frame in frames:
            fh.write(frame.text(keys, scale, total_energy=not baseline))


@dataclass
class _Frame:
    """One row's values, checked, before any text is written."""

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None  # the target, energy_corrected
    total_energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    config_type: str | None
    energy_weight: float | None
    forces_weight: float | None  # per structure
    stress_weight: float | None

    @classmethod
    def of(cls, row: dict, with_weights: bool) -> _Frame:
        """The frame of one DataFrame row; its weights only ``with_weights``."""
        if not with_weights:
            row = {k: v for k, v in row.items() if k not in GRACE_WEIGHTS}
        name, atoms = str(row["name"]), row["ase_atoms"]
        n = len(atoms)
        forces = _array_or_none(row["forces"])
        if forces is not None:
            if forces.shape != (n, 3):
                raise ValueError(f"{name}: forces of shape {forces.shape}, expected ({n}, 3)")
            finite = np.isfinite(forces)
            if not finite.any():
                forces = None
            elif not finite.all():
                raise ValueError(f"{name}: forces are NaN or infinite for some atoms only")
        forces_weight = _per_atom_weight(row.get("w_forces"), n, name)
        return cls(
            name=name,
            numbers=np.asarray(atoms.numbers),
            positions=np.asarray(atoms.positions, dtype=np.float64),
            cell=np.asarray(atoms.cell.array, dtype=np.float64),
            pbc=np.asarray(atoms.pbc, dtype=bool),
            energy=_finite_or_none(row["energy_corrected"]),
            total_energy=_finite_or_none(row.get("energy")),
            forces=forces,
            stress=_voigt_or_none(row.get("stress"), name),
            config_type=_config_type(row),
            energy_weight=_finite_or_none(row.get("w_energy")),
            forces_weight=None if forces_weight is None else _constant(forces_weight, name),
            stress_weight=_finite_or_none(row.get("virial_weight")),
        )

    def text(self, keys: ExtxyzKeys, scale: dict[str, float | None], total_energy: bool
             ) -> str:
        columns = [self.positions]
        properties = "species:S:1:pos:R:3"
        if self.forces is not None:
            columns.append(self.forces)
            properties += f":{keys.forces_key}:R:3"
        info = []
        if self.cell.any():
            info.append(f'Lattice="{_floats(self.cell.reshape(-1))}"')
        info.append(f"Properties={properties}")
        if self.energy is not None:
            info.append(f"{keys.energy_key}={self.energy!r}")
        if total_energy and keys.total_energy_key and self.total_energy is not None:
            info.append(f"{keys.total_energy_key}={self.total_energy!r}")
        if self.stress is not None:
            info.append(f'{keys.stress_key}="{_floats(self.stress)}"')
        for key, value, present, kind in (
                (keys.energy_weight_key, self.energy_weight, self.energy, "energy"),
                (keys.forces_weight_key, self.forces_weight, self.forces, "forces"),
                (keys.stress_weight_key, self.stress_weight, self.stress, "stress")):
            if value is not None and present is not None and scale[kind] is not None:
                info.append(f"{key}={value / scale[kind]!r}")
        if self.config_type is not None:
            info.append(f"{keys.config_type_key}={_string(self.config_type)}")
        info.append(f"{keys.id_key}={_string(self.name)}")
        info.append('pbc="{}"'.format(" ".join("T" if p else "F" for p in self.pbc)))
        symbols = [chemical_symbols[z] for z in self.numbers.tolist()]
        rows = np.hstack(columns).tolist()
        atom_lines = "".join(f"{s} {' '.join(map(float.__repr__, r))}\n"
                             for s, r in zip(symbols, rows, strict=True))
        return f"{len(symbols)}\n{' '.join(info)}\n{atom_lines}"


def _weight_scales(frames: list[_Frame], mode: str) -> dict[str, float | None]:
    """What each kind of weight is divided by: its mean over the values written (forces
    over atoms) for "mean_one", 1 for "as_given", None (not written) for "none"."""
    if mode == "none":
        return dict.fromkeys(("energy", "forces", "stress"))
    if mode == "as_given":
        return dict.fromkeys(("energy", "forces", "stress"), 1.0)
    scales: dict[str, float | None] = {}
    for kind, weight, label, count in (
            ("energy", "energy_weight", "energy", lambda f: 1),
            ("forces", "forces_weight", "forces", lambda f: len(f.numbers)),
            ("stress", "stress_weight", "stress", lambda f: 1)):
        given = [(getattr(f, weight), count(f)) for f in frames
                 if getattr(f, weight) is not None and getattr(f, label) is not None]
        if not given:
            scales[kind] = 1.0
            continue
        mean = math.fsum(w * c for w, c in given) / sum(c for _, c in given)
        if not (math.isfinite(mean) and mean > 0):
            raise ValueError(f"the {kind} weights have mean {mean}: cannot rescale them to "
                             "mean 1 (use weights='as_given' or 'none')")
        scales[kind] = mean
    return scales


def _floats(values: np.ndarray) -> str:
    return " ".join(map(float.__repr__, np.asarray(values, dtype=np.float64).tolist()))


def _string(value: str) -> str:
    """``value`` as a comment-line value that ASE's extxyz reader gives back unchanged:
    quoted, or as ASE's ``_JSON`` value where ASE would read a number or a boolean."""
    plain = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value.isprintable() and _reads_back(plain, value):
        return plain
    as_json = json.dumps(value)
    quoted = '"_JSON ' + as_json.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if not _reads_back(quoted, value):
        raise ValueError(f"cannot write {value!r} as an extxyz value that reads back the same")
    return quoted


def _reads_back(text: str, value: str) -> bool:
    parsed = key_val_str_to_dict(f"k={text}").get("k")
    return isinstance(parsed, str) and parsed == value


def _config_type(row: dict) -> str | None:
    value = row.get("config_type")
    if isinstance(value, str) and value:
        return value
    tags = row.get("tags")
    if isinstance(tags, (list, tuple, np.ndarray)) and len(tags):
        return "+".join(str(t) for t in tags)
    return None


def _require(df: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"not a pacemaker DataFrame: no column {', '.join(missing)}")


def _missing(value: Any) -> bool:
    """None, or a float NaN (pandas' missing value in an object column)."""
    if value is None:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _finite_or_none(value: Any) -> float | None:
    if _missing(value):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _array_or_none(value: Any) -> np.ndarray | None:
    return None if _missing(value) else np.asarray(value, dtype=np.float64)


def _voigt_or_none(value: Any, name: str) -> np.ndarray | None:
    """The stress as the Voigt 6-vector, or None where unknown (None, NaN)."""
    stress = _array_or_none(value)
    if stress is None:
        return None
    if stress.shape == (3, 3):
        stress = full_3x3_to_voigt_6_stress(stress)
    if stress.shape != (6,):
        raise ValueError(f"{name}: stress of shape {stress.shape}, expected (6,) Voigt")
    finite = np.isfinite(stress)
    if not finite.any():
        return None
    if not finite.all():
        raise ValueError(f"{name}: some stress components are NaN or infinite")
    return stress


def _per_atom_weight(value: Any, n_atoms: int, name: str) -> np.ndarray | None:
    """A row's force weights, one per atom (a single number given for all atoms is
    repeated), or None where it has none. Partly missing weights are an error."""
    weights = _array_or_none(value)
    if weights is None:
        return None
    if weights.size == 1:
        weights = np.full(n_atoms, float(weights.reshape(())))
    if weights.shape != (n_atoms,):
        raise ValueError(f"{name}: {weights.size} force weights for {n_atoms} atoms")
    finite = np.isfinite(weights)
    if not finite.any():
        return None
    if not finite.all():
        raise ValueError(f"{name}: force weights are NaN or infinite for some atoms only")
    return weights


def _constant(weights: np.ndarray, name: str) -> float:
    if not (weights == weights[0]).all():
        raise ValueError(
            f"{name}: the force weights differ from atom to atom, and MACE's "
            "config_forces_weight is one number per structure; export with weights='none', "
            "or to GRACE or pacemaker, which take per-atom force weights")
    return float(weights[0])


# --- GRACE -------------------------------------------------------------------------------

GRACE_WEIGHTS = {"w_energy": "energy_weight", "w_forces": "force_weight",
                 "virial_weight": "virial_weight"}


def grace_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The DataFrame GRACE (gracemaker) reads, from a pacemaker DataFrame; see the module
    docstring for each convention and where it was found. ``df`` is not modified."""
    _require(df, ("name", "ase_atoms", "energy_corrected", "forces"))
    clash = [ours for theirs, ours in GRACE_WEIGHTS.items()
             if theirs != ours and theirs in df.columns and ours in df.columns]
    if clash:
        raise ValueError(f"both pacemaker's and GRACE's weight columns are present: {clash}")
    names = [str(n) for n in df["name"]]
    n_atoms = [len(atoms) for atoms in df["ase_atoms"]]
    _check_finite_labels(df, names, n_atoms)
    out = df.rename(columns=GRACE_WEIGHTS)
    out.attrs = copy.deepcopy(df.attrs)

    if "energy_weight" in out.columns:
        values = [_finite_or_none(w) for w in out["energy_weight"]]
        _set_or_drop(out, "energy_weight", _fill_scalar(values))
    if "force_weight" in out.columns:
        per_atom = [_per_atom_weight(w, n, name)
                    for w, n, name in zip(out["force_weight"], n_atoms, names, strict=True)]
        _set_or_drop(out, "force_weight", _fill_per_atom(per_atom, n_atoms))
    if "stress" in out.columns:
        stress = [_voigt_or_none(s, name) for s, name in zip(out["stress"], names, strict=True)]
        given = ([_finite_or_none(w) for w in out["virial_weight"]]
                 if "virial_weight" in out.columns else [None] * len(out))
        if "virial_weight" in out.columns or any(s is None for s in stress):
            has = [w if s is not None else None for w, s in zip(given, stress, strict=True)]
            filled = _fill_scalar(has) or [1.0] * len(out)
            out["virial_weight"] = [w if s is not None else 0.0
                                    for w, s in zip(filled, stress, strict=True)]
        out["stress"] = [np.zeros(6) if s is None else s for s in stress]
    elif "virial_weight" in out.columns:
        _set_or_drop(out, "virial_weight",
                     _fill_scalar([_finite_or_none(w) for w in out["virial_weight"]]))
    meta = out.attrs.setdefault("mlipstore", {})
    meta["grace"] = {
        "target": "energy_corrected",
        "weights": "energy_weight, virial_weight per structure; force_weight per atom; a "
                   "configuration without one has the mean of the given ones",
        "stress": "eV/Angstrom^3 Voigt, ASE sign; unknown stress: zeros with virial_weight 0",
    }
    return out


def _check_finite_labels(df: pd.DataFrame, names: list[str], n_atoms: list[int]) -> None:
    bad_energy = [name for name, e in zip(names, df["energy_corrected"], strict=True)
                  if _finite_or_none(e) is None]
    if bad_energy:
        raise ValueError(f"{len(bad_energy)} configurations have no finite energy_corrected "
                         f"(e.g. {', '.join(bad_energy[:3])}); GRACE cannot leave an energy "
                         "out of its loss: filter them out before exporting")
    bad_forces = []
    for name, forces, n in zip(names, df["forces"], n_atoms, strict=True):
        forces = _array_or_none(forces)
        if forces is None or forces.shape != (n, 3) or not np.isfinite(forces).all():
            bad_forces.append(name)
    if bad_forces:
        raise ValueError(f"{len(bad_forces)} configurations have no finite (n_atoms, 3) forces "
                         f"(e.g. {', '.join(bad_forces[:3])}); GRACE needs forces for every "
                         "configuration")


def _fill_scalar(values: list[float | None]) -> list[float] | None:
    """Missing values filled with the mean of the given ones; None where none is given."""
    given = [v for v in values if v is not None]
    if not given:
        return None
    mean = math.fsum(given) / len(given)
    return [mean if v is None else v for v in values]


def _fill_per_atom(values: list[np.ndarray | None], n_atoms: list[int]
                   ) -> list[np.ndarray] | None:
    given = [v for v in values if v is not None]
    if not given:
        return None
    mean = math.fsum(np.concatenate(given).tolist()) / sum(len(v) for v in given)
    return [np.full(n, mean) if v is None else v for v, n in zip(values, n_atoms, strict=True)]


def _set_or_drop(df: pd.DataFrame, column: str, values: list | None) -> None:
    if values is None:
        del df[column]
    else:
        df[column] = pd.Series(values, index=df.index, dtype=object if
                               isinstance(values[0], np.ndarray) else np.float64)


def write_grace(df: pd.DataFrame, path: str | Path) -> None:
    """Write the GRACE DataFrame of ``df`` as a gzipped pickle, atomically."""
    write_pickle_gzip(grace_frame(df), path)


FORMATS: dict[str, Writer] = {
    "pacemaker": write_pickle_gzip,
    "extxyz": write_extxyz,
    "grace": write_grace,
}

# file name endings the formats' readers expect (MACE's training script has required .xyz)
SUFFIXES = {"pacemaker": ".pckl.gzip", "extxyz": ".xyz", "grace": ".pckl.gzip"}

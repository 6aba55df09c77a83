"""One DFT configuration in ASE units, built and validated from an ``ase.Atoms`` frame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ase
import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress

from ..errors import ConfigError, FrameError
from .identity import config_id
from .method import SETTINGS, Method, setting_value


@dataclass(frozen=True)
class KeyMap:
    """Where a frame keeps its labels: names looked up in the calculator results,
    then ``atoms.info``, then ``atoms.arrays``.

    ``virial`` (eV) is used when no stress is found: stress = -virial / volume.
    ``energy_corrected`` is a fit target the source made (energy minus its references);
    the weights are per-configuration loss weights (``forces_weight`` per atom or one
    number for all atoms). ``method`` maps DFT method settings (``store.method.SETTINGS``,
    e.g. ``xc``) to labels that state them per frame, e.g. ``xc=dft_functional``.
    """

    energy: str = "energy"
    free_energy: str = "free_energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"
    energy_corrected: str = "energy_corrected"
    energy_weight: str = "energy_weight"
    forces_weight: str = "forces_weight"
    virial_weight: str = "virial_weight"
    method: tuple[tuple[str, str], ...] = ()  # (method setting, label) pairs

    @classmethod
    def parse(cls, text: str | None) -> KeyMap:
        """Parse ``energy=REF_energy,forces=REF_forces,...`` (the CLI's --key-map)."""
        if not text:
            return cls()
        known = set(cls.__dataclass_fields__) - {"method"}
        mapping: dict[str, str] = {}
        method: list[tuple[str, str]] = []
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not value:
                raise ConfigError(f"--key-map item {item!r} is not of the form quantity=label")
            if key in SETTINGS:
                method.append((key, value))
                continue
            if key not in known:
                raise ConfigError(
                    f"--key-map: unknown quantity {key!r}; known: {', '.join(sorted(known))} "
                    f"and the method settings {', '.join(SETTINGS)}"
                )
            mapping[key] = value
        return cls(**mapping, method=tuple(method))


STANDARD_KEYS = KeyMap()  # ASE's own names: energy, forces, stress, ...


@dataclass
class RawFrame:
    """A parsed frame as ASE would build it: structure plus the three places where
    labels live (calculator results, ``info``, per-atom ``arrays``)."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    results: dict
    info: dict
    arrays: dict

    @classmethod
    def from_atoms(cls, atoms: ase.Atoms) -> RawFrame:
        return cls(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                   atoms.calc.results if atoms.calc is not None else {},
                   atoms.info, atoms.arrays)

    def lookup(self, key: str):
        """The label ``key``: calculator results first, then info, then arrays."""
        for where in (self.results, self.info, self.arrays):
            if key in where and where[key] is not None:
                return where[key]
        return None

    def present(self) -> str:
        names = [f"calculator[{k}]" for k in self.results]
        names += [f"info[{k}]" for k in self.info]
        names += [f"arrays[{k}]" for k in self.arrays if k not in ("numbers", "positions")]
        return ", ".join(names) or "none"

    @property
    def volume(self) -> float:
        return abs(float(np.linalg.det(self.cell)))


@dataclass
class Configuration:
    """A labelled configuration: eV, Angstrom, eV/Angstrom, stress in eV/Angstrom^3 (Voigt).

    ``energy`` or ``energy_corrected`` (the source's fit target) or both are given; the
    weights are the source's loss weights (not part of the id)."""

    numbers: np.ndarray  # (N,) int
    positions: np.ndarray  # (N, 3)
    cell: np.ndarray  # (3, 3), rows are lattice vectors
    pbc: np.ndarray  # (3,) bool
    energy: float | None
    free_energy: float | None
    forces: np.ndarray  # (N, 3)
    stress: np.ndarray | None  # (6,) Voigt xx yy zz yz xz xy, ASE sign
    energy_corrected: float | None = None  # eV
    energy_weight: float | None = None
    forces_weight: np.ndarray | None = None  # (N,)
    virial_weight: float | None = None
    method: Method | None = None  # the DFT settings the source states
    id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self._validate()
        self.id = config_id(
            self.numbers, self.positions, self.cell, self.pbc,
            self.energy, self.free_energy, self.forces, self.stress, self.energy_corrected,
            self.method.fingerprint if self.method is not None else None,
        )

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def _validate(self) -> None:
        n = len(self.numbers)
        if n == 0:
            raise FrameError("frame has no atoms")
        if self.numbers.min() < 1 or self.numbers.max() > 118:
            raise FrameError("atomic numbers outside 1..118 (unknown element)")
        for name, arr, shape in (
            ("positions", self.positions, (n, 3)),
            ("cell", self.cell, (3, 3)),
            ("forces", self.forces, (n, 3)),
            ("stress", self.stress, (6,)),
            ("forces_weight", self.forces_weight, (n,)),
        ):
            if arr is None:
                continue
            if arr.shape != shape:
                raise FrameError(f"{name} has shape {arr.shape}, expected {shape} for {n} atoms")
            if not np.isfinite(arr).all():
                raise FrameError(f"{name} contains non-finite values (NaN or inf)")
        if self.energy is None and self.energy_corrected is None:
            raise FrameError("neither energy nor energy_corrected is given")
        for name in ("energy", "free_energy", "energy_corrected", "energy_weight",
                     "virial_weight"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise FrameError(f"{name} is not finite ({value})")
        for name in ("energy_weight", "forces_weight", "virial_weight"):
            value = getattr(self, name)
            if value is not None and np.min(value) < 0:
                raise FrameError(f"{name} is negative")
        if self.pbc.any() and abs(_det3(self.cell.tolist())) < 1e-8:
            raise FrameError("periodic cell has zero volume")

    @classmethod
    def from_atoms(cls, atoms: ase.Atoms, key_map: KeyMap = STANDARD_KEYS,
                   method: Method | None = None) -> Configuration:
        """Read the labels named by ``key_map`` from ``atoms``; raise FrameError if unusable."""
        return cls.from_labels(RawFrame.from_atoms(atoms), key_map, method)

    @classmethod
    def from_labels(cls, labels: RawFrame, key_map: KeyMap = STANDARD_KEYS,
                    method: Method | None = None) -> Configuration:
        """Read the labels named by ``key_map``; raise FrameError if unusable. ``method``
        is the file's; settings the frame states under ``key_map.method`` labels take
        precedence."""
        energy = labels.lookup(key_map.energy)
        corrected = labels.lookup(key_map.energy_corrected)
        forces = labels.lookup(key_map.forces)
        missing = [name for name, v in (("energy", energy if corrected is None else 0),
                                        ("forces", forces)) if v is None]
        if missing:
            wanted = ", ".join(f"{m} (label {getattr(key_map, m)!r})" for m in missing)
            if "energy" in missing:
                wanted += f" nor energy_corrected (label {key_map.energy_corrected!r})"
            raise FrameError(
                f"no {wanted}; labels present: {labels.present()}; "
                "map them with --key-map (in a project: params.yaml ingest.key_maps), e.g. "
                "energy=REF_energy,forces=REF_forces"
            )

        def scalar(name: str) -> float | None:
            value = labels.lookup(getattr(key_map, name))
            return None if value is None else _scalar(value, name)

        try:
            n_atoms = len(labels.numbers)
            forces_weight = labels.lookup(key_map.forces_weight)
            if forces_weight is not None:  # one number for all atoms, or one per atom
                forces_weight = np.asarray(forces_weight, dtype=np.float64)
                if forces_weight.size == 1:
                    forces_weight = np.full(n_atoms, float(forces_weight.reshape(())))
            return cls(
                numbers=np.asarray(labels.numbers, dtype=np.int64),
                positions=np.asarray(labels.positions, dtype=np.float64),
                cell=np.asarray(labels.cell, dtype=np.float64),
                pbc=np.asarray(labels.pbc, dtype=bool),
                energy=scalar("energy"),
                free_energy=scalar("free_energy"),
                forces=np.asarray(forces, dtype=np.float64),
                stress=_stress(labels, key_map),
                energy_corrected=scalar("energy_corrected"),
                energy_weight=scalar("energy_weight"),
                forces_weight=forces_weight,
                virial_weight=scalar("virial_weight"),
                method=_frame_method(labels, key_map, method),
            )
        except (TypeError, ValueError) as err:
            if isinstance(err, FrameError):
                raise
            raise FrameError(str(err)) from err

    def to_atoms(self) -> ase.Atoms:
        """An ``ase.Atoms`` with a SinglePointCalculator holding the labels."""
        from ase.calculators.singlepoint import SinglePointDFTCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions,
                          cell=self.cell, pbc=self.pbc)
        results = {"energy": self.energy, "forces": self.forces,
                   "free_energy": self.free_energy, "stress": self.stress}
        atoms.calc = SinglePointDFTCalculator(
            atoms, **{k: v for k, v in results.items() if v is not None})
        extra = {"energy_corrected": self.energy_corrected, "energy_weight": self.energy_weight,
                 "virial_weight": self.virial_weight}
        atoms.info.update({k: v for k, v in extra.items() if v is not None})
        if self.forces_weight is not None:
            atoms.arrays["forces_weight"] = self.forces_weight
        return atoms


def _frame_method(labels: RawFrame, key_map: KeyMap, method: Method | None
                  ) -> Method | None:
    """``method`` with the settings the frame states under the key map's method labels."""
    stated = {}
    for setting, label in key_map.method:
        value = labels.lookup(label)
        if value is not None:
            value = value.item() if hasattr(value, "item") else value  # numpy scalars
            stated[setting] = setting_value(setting, value)
    if not stated:
        return method
    return Method(**{**(method.stated() if method is not None else {}), **stated})


def _det3(m: list[list[float]]) -> float:
    """Determinant of a 3x3 matrix (numpy's costs more than the rest of the checks)."""
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def _scalar(value, name: str) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise FrameError(f"{name} has shape {arr.shape}, expected a scalar")
    return float(arr.reshape(()))


def _stress(labels: RawFrame, key_map: KeyMap) -> np.ndarray | None:
    stress = labels.lookup(key_map.stress)
    if stress is not None:
        return _voigt(np.asarray(stress, dtype=np.float64), "stress")
    virial = labels.lookup(key_map.virial)
    if virial is None:
        return None
    volume = labels.volume
    if volume < 1e-8:
        raise FrameError("a virial is given but the cell has zero volume: no stress")
    return -_voigt(np.asarray(virial, dtype=np.float64), "virial") / volume


def _voigt(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.shape == (6,):
        return arr
    if arr.shape == (9,):
        arr = arr.reshape(3, 3)
    if arr.shape == (3, 3):
        return full_3x3_to_voigt_6_stress(arr)
    raise FrameError(f"{name} has shape {arr.shape}, expected (6,), (9,) or (3, 3)")

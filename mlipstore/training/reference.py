"""Reference (baseline) potentials for delta learning: ZBL and Lennard-Jones.

Both are pair potentials written to match LAMMPS exactly, so the baseline subtracted in
training is the one added back at deployment, in ASE and in LAMMPS:

- ZBL: ``pair_style zbl inner outer`` (universal screening function; between inner and
  outer a polynomial switch takes energy, force and curvature to zero at outer).
- LJ: ``pair_style lj/cut rc`` with ``pair_modify shift yes``:
  E(r) = 4 eps [(s/r)^12 - (s/r)^6] - E(rc) for r < rc. Unlike pairs mix by the
  Lorentz-Berthelot rule, sigma_ij = (sigma_i + sigma_j) / 2 and
  eps_ij = sqrt(eps_i eps_j), unless a pair is given explicitly.

Energies in eV, forces in eV/Angstrom, stress in eV/Angstrom^3 (ASE sign and Voigt order).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

# e^2 / (4 pi eps0) in eV Angstrom as LAMMPS's metal units have it (qqr2e), so that
# pair_style zbl in the deployed .lammps lines gives exactly the baseline trained against
# (CODATA's value, which pyace's ZBL uses, is 2.4e-8 relative above it)
COULOMB = 14.399645
ZBL_COEFFS = np.array([0.18175, 0.50986, 0.28022, 0.02817])
ZBL_EXPONENTS = np.array([3.19980, 0.94229, 0.40290, 0.20162])


class PairPotential(Calculator):
    """An ASE calculator for a pair potential given by ``pair(r, Zi, Zj) -> (E, dE/dr)``
    (vectorised over pairs). Gives energy, free_energy, forces and stress."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    cutoff: float

    @abstractmethod
    def pair(self, r: np.ndarray, zi: np.ndarray, zj: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def describe(self) -> dict:
        """Type and parameters, enough to rebuild it (``from_description``)."""

    def check_elements(self, symbols) -> None:
        """Raise ValueError if the potential has no parameters for some element."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        i, j, d, vec = neighbor_list("ijdD", atoms, self.cutoff)
        z = atoms.numbers
        energy, de_dr = self.pair(d, z[i], z[j])
        # every pair appears twice (i-j and j-i): half of each
        pair_force = (0.5 * de_dr / d)[:, None] * vec  # dE/d(vec) for the pair
        forces = np.zeros((len(atoms), 3))
        np.add.at(forces, i, pair_force)
        np.add.at(forces, j, -pair_force)
        self.results["energy"] = self.results["free_energy"] = 0.5 * float(energy.sum())
        self.results["forces"] = forces
        if atoms.cell.rank == 3:
            virial = vec.T @ pair_force  # sum over pairs of r_ij (x) dE/dr_ij
            stress = virial / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        else:
            self.results["stress"] = np.zeros(6)


class ZBL(PairPotential):
    """Ziegler-Biersack-Littmark screened nuclear repulsion, as LAMMPS ``pair_style zbl``."""

    def __init__(self, inner_cutoff: float, outer_cutoff: float, **kwargs) -> None:
        if not 0 <= inner_cutoff < outer_cutoff:
            raise ValueError(f"ZBL needs 0 <= inner_cutoff < outer_cutoff, got "
                             f"{inner_cutoff}, {outer_cutoff}")
        super().__init__(**kwargs)
        self.inner, self.cutoff = inner_cutoff, outer_cutoff

    @staticmethod
    def _e_and_derivatives(r, zi, zj):
        """E, dE/dr, d2E/dr2 of the unswitched ZBL energy."""
        a = 0.46850 / (zi**0.23 + zj**0.23)
        x = np.multiply.outer(r / a, ZBL_EXPONENTS)
        terms = ZBL_COEFFS * np.exp(-x)
        phi = terms.sum(-1)
        dphi = -(terms * ZBL_EXPONENTS).sum(-1) / a
        d2phi = (terms * ZBL_EXPONENTS**2).sum(-1) / a**2
        k = COULOMB * zi * zj
        e = k * phi / r
        de = k * (dphi / r - phi / r**2)
        d2e = k * (d2phi / r - 2 * dphi / r**2 + 2 * phi / r**3)
        return e, de, d2e

    def pair(self, r, zi, zj):
        e, de, _ = self._e_and_derivatives(r, zi, zj)
        rc = np.full_like(r, self.cutoff)
        ec, dec, d2ec = self._e_and_derivatives(rc, zi, zj)
        t = self.cutoff - self.inner
        sw_a = (-3 * dec + t * d2ec) / t**2
        sw_b = (2 * dec - t * d2ec) / t**3
        sw_c = -ec + 0.5 * t * dec - t**2 * d2ec / 12
        dr = np.clip(r - self.inner, 0.0, None)
        switch = sw_a / 3 * dr**3 + sw_b / 4 * dr**4 + sw_c
        dswitch = sw_a * dr**2 + sw_b * dr**3
        inside = r < self.cutoff
        return np.where(inside, e + switch, 0.0), np.where(inside, de + dswitch, 0.0)

    def describe(self) -> dict:
        return {"type": "ZBL", "pair_style": "zbl", "inner_cutoff": self.inner,
                "outer_cutoff": self.cutoff, "screening": "universal (Ziegler-Biersack-Littmark)"}

    def lammps(self, elements: Sequence[str]) -> tuple[str, list[str]]:
        """pair_style arguments and pair_coeff lines (types numbered as ``elements``)."""
        coeffs = [f"pair_coeff {a + 1} {b + 1} zbl {atomic_numbers[elements[a]]:.1f} "
                  f"{atomic_numbers[elements[b]]:.1f}"
                  for a in range(len(elements)) for b in range(a, len(elements))]
        return f"zbl {_number(self.inner)} {_number(self.cutoff)}", coeffs


class LennardJones(PairPotential):
    """Lennard-Jones with per-element (eps, sigma), Lorentz-Berthelot mixing, explicit pair
    overrides, and energy shifted to zero at the cutoff (LAMMPS lj/cut, shift yes)."""

    def __init__(self, cutoff: float, elements: Mapping[str, Mapping[str, float]],
                 pairs: Mapping[str, Mapping[str, float]] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cutoff = cutoff
        self.elements = {s: dict(v) for s, v in elements.items()}
        self.pairs = {_pair_key(k): dict(v) for k, v in (pairs or {}).items()}
        self._eps = np.zeros((119, 119))
        self._sigma = np.ones((119, 119))
        for a in self.elements:
            for b in self.elements:
                eps, sigma = self.pair_parameters(a, b)
                za, zb = atomic_numbers[a], atomic_numbers[b]
                self._eps[za, zb] = self._eps[zb, za] = eps
                self._sigma[za, zb] = self._sigma[zb, za] = sigma

    def pair_parameters(self, a: str, b: str) -> tuple[float, float]:
        """(epsilon eV, sigma Angstrom) of the pair a-b."""
        explicit = self.pairs.get(_pair_key(f"{a}-{b}"))
        if explicit is not None:
            return explicit["epsilon"], explicit["sigma"]
        pa, pb = self.elements[a], self.elements[b]
        return float(np.sqrt(pa["epsilon"] * pb["epsilon"])), (pa["sigma"] + pb["sigma"]) / 2

    def check_elements(self, symbols) -> None:
        missing = sorted(set(symbols) - set(self.elements))
        if missing:
            raise ValueError(f"Lennard-Jones parameters missing for {', '.join(missing)}: "
                             "give epsilon and sigma in training.lj.elements")

    def pair(self, r, zi, zj):
        eps, sigma = self._eps[zi, zj], self._sigma[zi, zj]
        sr6 = (sigma / r) ** 6
        src6 = (sigma / self.cutoff) ** 6
        e = 4 * eps * (sr6**2 - sr6) - 4 * eps * (src6**2 - src6)
        de = 4 * eps * (-12 * sr6**2 + 6 * sr6) / r
        return e, de

    def describe(self) -> dict:
        return {"type": "LJ", "pair_style": "lj/cut", "cutoff": self.cutoff,
                "elements": self.elements, "pairs": self.pairs,
                "mixing": "Lorentz-Berthelot", "energy_shifted_to_zero_at_cutoff": True}

    def lammps(self, elements: Sequence[str]) -> tuple[str, list[str]]:
        coeffs = []
        for a in range(len(elements)):
            for b in range(a, len(elements)):
                eps, sigma = self.pair_parameters(elements[a], elements[b])
                coeffs.append(f"pair_coeff {a + 1} {b + 1} lj/cut {_number(eps)} "
                              f"{_number(sigma)}")
        return f"lj/cut {_number(self.cutoff)}", ["pair_modify pair lj/cut shift yes", *coeffs]


def from_description(description: dict | None) -> PairPotential | None:
    """Rebuild a baseline from ``describe()`` output (as recorded in a lineage)."""
    if not description:
        return None
    if description["type"] == "ZBL":
        return ZBL(description["inner_cutoff"], description["outer_cutoff"])
    if description["type"] == "LJ":
        return LennardJones(description["cutoff"], description["elements"],
                            description["pairs"])
    raise ValueError(f"unknown baseline type {description['type']!r}")


def _number(x: float) -> str:
    """The shortest text that reads back as exactly ``x`` (no exponent, for LAMMPS)."""
    return np.format_float_positional(float(x), trim="-")


def lammps_input(yace: str, elements: Sequence[str], baseline: PairPotential | None,
                 note: str = "") -> str:
    """LAMMPS lines that evaluate the deployed model: ACE (+ the baseline)."""
    elements = list(elements)
    head = [f"# {note}".rstrip(),
            "# atom types: " + ", ".join(f"{k + 1} {s}" for k, s in enumerate(elements)),
            "# needs LAMMPS built with ML-PACE"]
    species = " ".join(elements)
    if baseline is None:
        return "\n".join([*head, "pair_style pace", f"pair_coeff * * {yace} {species}"]) + "\n"
    style, coeffs = baseline.lammps(elements)
    return "\n".join([*head, f"pair_style hybrid/overlay pace {style}",
                      f"pair_coeff * * pace {yace} {species}", *coeffs]) + "\n"


def _pair_key(text: str) -> str:
    a, _, b = text.partition("-")
    if a not in atomic_numbers or b not in atomic_numbers:
        raise ValueError(f"pair {text!r} is not of the form Al-Ti")
    return "-".join(sorted((a, b)))

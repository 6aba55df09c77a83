"""Which DFT calculation made a configuration's numbers: the method record and its
fingerprint.

Total energies of different DFT settings (functional, cutoff, pseudopotentials,
smearing, ...) differ by far more than a potential's fit error, so a training set must
not mix them silently. Each configuration carries the ``Method`` its source states
(parsed from the output, or given by the user for extxyz and DataFrames); a setting the
source does not state is None, never guessed. The fingerprint is a hash over the settings
that change energies (every field but ``code_version``); configurations with equal
fingerprints were computed the same way as far as their sources say.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cached_property

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError

FINGERPRINT_HEX_CHARS = 16
NOT_IN_FINGERPRINT = ("code_version",)  # a code's version alone does not change energies
UNKNOWN = "unknown"  # what a configuration without any method record is counted as


@dataclass(frozen=True)
class Method:
    """The DFT settings a source states (None: not stated). Energies in eV."""

    code: str | None = None  # "VASP", "Quantum ESPRESSO", "FHI-aims", or as given
    code_version: str | None = None
    xc: str | None = None  # exchange-correlation functional, in the code's words
    cutoff_eV: float | None = None  # plane-wave kinetic-energy cutoff
    density_cutoff_eV: float | None = None  # charge-density cutoff (pw.x ecutrho)
    kpoints: str | None = None  # "spacing 0.25 1/A", "mesh 4x4x4", "gamma", "2 points"
    smearing: str | None = None  # "gaussian", "Methfessel-Paxton 1", "Fermi-Dirac", ...
    smearing_width_eV: float | None = None
    spin: str | None = None  # "none", "collinear", "noncollinear", "noncollinear+SOC"
    pseudopotentials: str | None = None  # "H=H.pbe.UPF md5:...; O=..." by element
    basis: str | None = None  # localised-basis codes: "B=tight; N=tight"
    relativistic: str | None = None  # FHI-aims: "atomic_zora scalar"
    other: str | None = None  # further stated settings that change energies: "K=V, K=V"

    @cached_property
    def covers(self) -> tuple[str, ...]:
        """The settings the fingerprint is made of: those stated, but not code_version."""
        return tuple(f.name for f in fields(self)
                     if f.name not in NOT_IN_FINGERPRINT and getattr(self, f.name) is not None)

    @cached_property
    def fingerprint(self) -> str | None:
        """Hex hash over the stated settings (``covers``); None if none is stated."""
        if not self.covers:
            return None
        settings = {name: _canonical(getattr(self, name)) for name in self.covers}
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"mlipstore-method-v1" + text.encode()).hexdigest()[
            :FINGERPRINT_HEX_CHARS]

    def stated(self) -> dict[str, str | float]:
        """The settings that are not None, by name."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def filled_from(self, given: Method | None, where: str) -> Method:
        """This record with the settings it lacks taken from ``given`` (the user's);
        ConfigError if ``given`` contradicts a setting stated here."""
        if given is None:
            return self
        ours = self.stated()
        clash = [f"{k}={v!r} where {where} states {ours[k]!r}"
                 for k, v in given.stated().items() if k in ours and ours[k] != v]
        if clash:
            raise ConfigError("the given method contradicts the file: " + "; ".join(clash))
        return Method(**{**given.stated(), **ours})

    @classmethod
    def parse(cls, text: str | Mapping | None) -> Method | None:
        """``code=VASP,xc=PBE,cutoff_eV=520`` (the CLI's --method; a mapping in
        params.yaml) as a Method; ConfigError naming an unknown setting."""
        if not text:
            return None
        if isinstance(text, Mapping):
            pairs = [(str(k), str(v)) for k, v in text.items()]
        else:
            pairs = []
            for item in text.split(","):
                key, sep, value = item.partition("=")
                if not sep or not key.strip() or not value.strip():
                    raise ConfigError(f"method item {item!r} is not of the form setting=value")
                pairs.append((key.strip(), value.strip()))
        values = {}
        for key, value in pairs:
            values[key] = setting_value(key, value)
        return cls(**values)


SETTINGS = [f.name for f in fields(Method)]


def setting_value(name: str, value) -> str | float:
    """A setting's value as its field's type (float for the ``*_eV`` ones)."""
    if name not in SETTINGS:
        raise ConfigError(f"unknown method setting {name!r}; known: {', '.join(SETTINGS)}")
    if name.endswith("_eV"):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"method setting {name}={value!r}: not a number (eV)") from None
    return str(value)


def _canonical(value: str | float) -> str | float:
    # 12 significant digits: a cutoff converted from Ry hashes the same on any machine
    return float(f"{value:.12g}") if isinstance(value, float) else " ".join(value.split())


ARROW_TYPE = pa.struct([pa.field(name, pa.float64() if name.endswith("_eV") else pa.string())
                        for name in SETTINGS])


def to_arrow(methods: list[Method | None]) -> tuple[pa.StructArray, pa.StringArray]:
    """The ``method`` and ``method_fingerprint`` columns of rows with these methods (None:
    unknown; a record stating nothing is stored as unknown as well)."""
    distinct: dict[Method, int] = {}
    index = [None if m is None or m.fingerprint is None else distinct.setdefault(m, len(distinct))
             for m in methods]
    take = pa.array(index, pa.int32())
    records = pa.array([asdict(m) for m in distinct], ARROW_TYPE)
    prints = pa.array([m.fingerprint for m in distinct], pa.string())
    return records.take(take), prints.take(take)


def from_table(table: pa.Table) -> list[Method | None]:
    """The Method of each row of a table with ``method`` and ``method_fingerprint``
    columns (None: unknown); one object per fingerprint, built from its first row."""
    prints = table.column("method_fingerprint").to_pylist()
    records = table.column("method")
    built: dict[str, Method] = {}
    for row, fingerprint in enumerate(prints):
        if fingerprint is not None and fingerprint not in built:
            built[fingerprint] = Method(**records[row].as_py())
    return [built.get(fingerprint) for fingerprint in prints]


def summarize(table: pa.Table) -> dict[str, dict]:
    """Configurations per method fingerprint of a table with ``method`` and
    ``method_fingerprint`` columns: ``{fingerprint or "unknown": {"n_configs": n,
    "settings": {...}}}``, the most frequent first."""
    prints = table.column("method_fingerprint")
    counts = pc.value_counts(prints).to_pylist()
    records = table.column("method")
    summary = {}
    for row in sorted(counts, key=lambda r: (-r["counts"], r["values"] or "")):
        fingerprint = row["values"]
        if fingerprint is None:
            summary[UNKNOWN] = {"n_configs": row["counts"], "settings": {}}
            continue
        first = pc.index(prints, fingerprint).as_py()
        settings = Method(**records[first].as_py()).stated()
        summary[fingerprint] = {"n_configs": row["counts"], "settings": settings}
    return summary


def differences(summary: Mapping[str, Mapping]) -> list[str]:
    """The settings whose values are not the same for every fingerprint of ``summary``
    (a setting stated for some and not for others differs as well)."""
    if len(summary) < 2:
        return []
    values = [entry["settings"] for entry in summary.values()]
    names = [n for n in SETTINGS if n not in NOT_IN_FINGERPRINT]
    return [n for n in names if len({json.dumps(v.get(n)) for v in values}) > 1]


def side_by_side(summary: Mapping[str, Mapping], only: list[str] | None = None) -> list[str]:
    """Text lines: one column per fingerprint (with its configuration count), one row
    per setting (``only``: just these), '-' where a setting is not stated."""
    if not summary:
        return []
    names = only if only is not None else [
        n for n in SETTINGS if any(n in e["settings"] for e in summary.values())]
    header = ["setting", *summary]
    rows = [["configurations", *(str(e["n_configs"]) for e in summary.values())]]
    rows += [[n, *(_shown(e["settings"].get(n)) for e in summary.values())] for n in names]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def _shown(value) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)

"""The DFT method a code's output states: one header reader per format.

Each reader reads only the head of the file (the settings come before the first
step) and returns a ``Method`` holding what the output states; a setting it does not
state stays None. Values are in the code's words, energies converted to eV.

- VASP vasprun.xml: ``<generator>``, ``<incar>``, ``<parameters>``, ``<kpoints>``,
  ``<atominfo>`` (POTCAR titles).
- VASP OUTCAR: the version line, the INCAR echo (VASP 6), the POTCAR lines (and their
  SHA256 where printed) and the parameter summary; both VASP readers go through one
  function (``_vasp``), so the same run read from either file gets the same record.
- Quantum ESPRESSO pw.x: the header (version, functional, cutoffs, smearing,
  pseudopotential files and their MD5 checksums, k points).
- FHI-aims: the version and the control.in echo (xc, spin, relativistic, occupation,
  k_grid, the species defaults' level and a hash of their content).
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from ase.io.formats import open_with_compression
from ase.units import Ry

from ..store.method import Method

HEAD_LINES = 20_000  # no header is longer; the readers stop earlier at their end marker


def _lines(path: Path, stop: str | None = None) -> Iterator[str]:
    """The file's first lines (decompressed), up to the line holding ``stop``."""
    with open_with_compression(str(path), "rb") as fh:
        for number, raw in enumerate(fh):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if number >= HEAD_LINES or (stop is not None and stop in line):
                return
            yield line


# -- VASP ----------------------------------------------------------------------------

SMEARING_VASP = {-5: "tetrahedron (Bloechl)", -4: "tetrahedron", -2: "fixed occupations",
                 -1: "Fermi-Dirac", 0: "gaussian"}
GGA_NAMES = {"PE": "PBE", "PS": "PBEsol", "91": "PW91", "RP": "RPBE", "RE": "revPBE",
             "AM": "AM05", "CA": "LDA", "PZ": "LDA"}
POTCAR_FUNCTIONALS = {"PAW_PBE": "PBE", "PAW_GGA": "PW91", "PAW_LDA": "LDA", "PAW": "LDA"}
PREC_NAMES = {"l": "Low", "m": "Medium", "h": "High", "n": "Normal", "s": "Single",
              "a": "Accurate"}
# stated only when switched on, so that vasprun.xml (which lists every tag) and OUTCAR
# (which prints some only when set) give the same record
VASP_SWITCHES = ("LDAU", "LHFCALC", "LUSE_VDW", "ADDGRID")


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower().lstrip(".")
    return text.startswith("t") if text[:1] in ("t", "f") else None


def _number(value: str | None) -> float | None:
    try:
        return float(value.replace("d", "e").replace("D", "e")) if value else None
    except ValueError:
        return None


def _vasp(version: str | None, tags: dict[str, str], incar: dict[str, str],
          potcars: list[str], sha256: dict[str, str], mesh: str | None) -> Method:
    """The Method of a VASP run: ``tags`` from the parameter summary, ``incar`` as the
    user wrote it, POTCAR titles (and SHA256 by title), the generated k mesh."""
    def tag(name: str) -> str | None:
        return tags.get(name, incar.get(name))

    xc = None
    metagga, gga = tag("METAGGA"), tag("GGA")
    if metagga and metagga.strip().upper() not in ("F", "--", "NONE", ".FALSE."):
        xc = metagga.strip().upper()
    elif gga and gga.strip() != "--":
        xc = GGA_NAMES.get(gga.strip().upper(), f"GGA={gga.strip()}")
    elif potcars:  # GGA = --: the POTCARs' functional (VASP's documented default)
        kinds = {POTCAR_FUNCTIONALS.get(title.split()[0]) for title in potcars}
        xc = kinds.pop() if len(kinds) == 1 else None
    ismear = _number(tag("ISMEAR"))
    smearing = None
    if ismear is not None:
        smearing = (f"Methfessel-Paxton {int(ismear)}" if ismear > 0
                    else SMEARING_VASP.get(int(ismear), f"ISMEAR={int(ismear)}"))
    spin = None
    if _flag(tag("LSORBIT")):
        spin = "noncollinear+SOC"
    elif _flag(tag("LNONCOLLINEAR")):
        spin = "noncollinear"
    elif _number(tag("ISPIN")) is not None:
        spin = "collinear" if _number(tag("ISPIN")) == 2 else "none"
    kpoints = mesh
    if "KSPACING" in incar:
        gamma = _flag(tag("KGAMMA"))
        kpoints = (f"spacing {_number(incar['KSPACING']):g} 1/A, "
                   f"{'Monkhorst-Pack' if gamma is False else 'Gamma-centred'}")
    other = {}
    if tag("PREC"):
        other["PREC"] = PREC_NAMES.get(tag("PREC").strip()[:1].lower(), tag("PREC").strip())
    for name in ("LASPH", "LREAL"):
        if _flag(tag(name)) is not None:
            other[name] = "T" if _flag(tag(name)) else "F"
    for name in VASP_SWITCHES:
        if _flag(tag(name)):
            other[name] = "T"
    if _flag(tag("LHFCALC")):
        other.update({k: f"{_number(tag(k)):g}" for k in ("AEXX", "HFSCREEN")
                      if _number(tag(k)) is not None})
    if _number(tag("IVDW")):
        other["IVDW"] = f"{_number(tag('IVDW')):g}"
    pseudo = {title.split()[1].split("_")[0]: title + (f" sha256:{sha256[title]}"
                                                       if title in sha256 else "")
              for title in potcars if len(title.split()) > 1}
    return Method(
        code="VASP", code_version=version, xc=xc,
        cutoff_eV=_number(tag("ENCUT")) or _number(tags.get("ENMAX")),
        kpoints=kpoints, smearing=smearing, smearing_width_eV=_number(tag("SIGMA")),
        spin=spin,
        pseudopotentials="; ".join(f"{el}={pseudo[el]}" for el in sorted(pseudo)) or None,
        other=", ".join(f"{k}={v}" for k, v in sorted(other.items())) or None,
    )


def vasp_xml(path: Path) -> Method:
    """The method stated by a vasprun.xml (its head, up to ``</atominfo>``)."""
    parser = ET.XMLPullParser(events=("end",))
    found: dict[str, ET.Element] = {}
    for line in _lines(path):
        parser.feed(line + "\n")
        for _, element in parser.read_events():
            if element.tag in ("generator", "incar", "parameters", "kpoints", "atominfo"):
                found.setdefault(element.tag, element)
        if "atominfo" in found:
            break

    def items(tag: str) -> dict[str, str]:
        element = found.get(tag)
        out: dict[str, str] = {}
        for item in element.iter("i") if element is not None else ():
            out.setdefault(item.get("name"), (item.text or "").strip())
        return out

    generator = items("generator")
    mesh = None
    divisions = found.get("kpoints")
    divisions = divisions.find("generation/v[@name='divisions']") if divisions else None
    if divisions is not None:
        mesh = "mesh " + "x".join(divisions.text.split())
    potcars = []
    atominfo = found.get("atominfo")
    for row in atominfo.iterfind("array[@name='atomtypes']/set/rc") if atominfo else ():
        cells = [(c.text or "").strip() for c in row.findall("c")]
        if cells and cells[-1] not in potcars:
            potcars.append(" ".join(cells[-1].split()))
    return _vasp(generator.get("version"), items("parameters"), items("incar"), potcars, {},
                 mesh)


_VASP_TAG = re.compile(r"\b([A-Z][A-Z_0-9]*)\s*=\s*([^\s;]+)")
_VASP_ENDS_HEAD = "k-points in reciprocal lattice and weights"


def vasp_out(path: Path) -> Method:
    """The method stated by a VASP OUTCAR (its head, up to the k-point list)."""
    version, incar, tags, potcars, sha256, mesh = None, {}, {}, [], {}, None
    section = None
    for line in _lines(path, stop=_VASP_ENDS_HEAD):
        stripped = line.strip()
        if version is None and stripped.startswith("vasp."):
            version = stripped.split()[0].removeprefix("vasp.")
        elif stripped == "INCAR:":
            section = "incar"
        elif stripped.startswith("POTCAR:"):
            section = "potcar"
            title = " ".join(stripped.removeprefix("POTCAR:").split())
            if title not in potcars:
                potcars.append(title)
        elif section == "incar" and (match := _VASP_TAG.match(stripped)):
            incar.setdefault(match[1], match[2])
        elif stripped.startswith("SHA256 =") and potcars:
            sha256.setdefault(potcars[-1], stripped.split()[2])
        elif stripped.startswith("generate k-points for:"):
            mesh = "mesh " + "x".join(stripped.split(":")[1].split())
        elif stripped.startswith("Dimension of arrays"):
            section = "parameters"
        elif section == "parameters":
            for name, value in _VASP_TAG.findall(line):
                tags.setdefault(name, value)
        if section == "incar" and not stripped:
            section = None
    return _vasp(version, tags, incar, potcars, sha256, mesh)


# -- Quantum ESPRESSO pw.x -------------------------------------------------------------

def espresso_out(path: Path) -> Method:
    """The method stated by a pw.x output's header (up to its first SCF)."""
    version = xc = cutoff = density = smearing = width = spin = kpoints = None
    pseudo: dict[str, str] = {}
    species, lines = None, list(_lines(path, stop="Self-consistent Calculation"))
    for number, line in enumerate(lines):
        stripped = line.strip()
        if version is None and (match := re.search(r"Program PWSCF v\.(\S+)", line)):
            version = match[1]
        elif xc is None and stripped.startswith("Exchange-correlation"):
            xc = " ".join(stripped.split("=", 1)[1].split("(")[0].split())
        elif stripped.startswith("kinetic-energy cutoff"):
            cutoff = _number(stripped.split("=")[1].split()[0]) * Ry
        elif stripped.startswith("charge density cutoff"):
            density = _number(stripped.split("=")[1].split()[0]) * Ry
        elif match := re.match(r"(.+?) smearing, width \(Ry\)=\s*(\S+)", stripped):
            smearing, width = match[1], _number(match[2]) * Ry
        elif match := re.match(r"PseudoPot\. #\s*\d+ for\s+(\S+) read from file", stripped):
            species = match[1]
            pseudo[species] = Path(lines[number + 1].strip()).name
        elif stripped.startswith("MD5 check sum:") and species is not None:
            pseudo[species] += f" md5:{stripped.split(':', 1)[1].strip()}"
        elif stripped.startswith("Noncollinear calculation"):
            spin = "noncollinear+SOC" if "spin-orbit" in stripped else "noncollinear"
        elif stripped.startswith("Starting magnetic structure") and spin is None:
            spin = "collinear"
        elif match := re.match(r"number of k points=\s*(\d+)", stripped):
            count = int(match[1])
            origin = count == 1 and number + 2 < len(lines) and re.search(
                r"=\s*\(\s*-?0\.0+\s+-?0\.0+\s+-?0\.0+\s*\)", lines[number + 2])
            kpoints = "gamma" if origin or "gamma" in stripped else f"{count} points"
    return Method(
        code="Quantum ESPRESSO", code_version=version, xc=xc, cutoff_eV=cutoff,
        density_cutoff_eV=density, kpoints=kpoints, smearing=smearing,
        smearing_width_eV=width, spin=spin,
        pseudopotentials="; ".join(f"{k}={pseudo[k]}" for k in sorted(pseudo)) or None,
    )


# -- FHI-aims --------------------------------------------------------------------------

AIMS_SETTINGS_IN_OTHER = ("vdw_correction_hirshfeld", "many_body_dispersion",
                          "many_body_dispersion_nl", "override_relativity", "charge",
                          "fixed_spin_moment", "hybrid_xc_coeff", "hse_unit")


def aims_output(path: Path) -> Method:
    """The method stated by an FHI-aims output: its control.in echo."""
    version, settings, levels, species_lines = None, {}, {}, []
    inside, species, level = False, None, None
    for line in _lines(path, stop="Completed first pass over input file control.in"):
        stripped = line.strip()
        if version is None and stripped.startswith("Version "):
            version = stripped.split()[1]
        elif "The contents of control.in will be repeated" in line:
            inside = True
        elif inside:
            if match := re.search(r'Suggested "(\w+)" defaults for (\w+) atom', line):
                level = match[1]
            text = stripped.split("#", 1)[0].split()
            if not text or set(stripped) <= {"-"}:
                continue
            if text[0] == "species":
                species = text[1]
                levels[species] = level
                level = None
            if species is not None:
                species_lines.append(" ".join(text))
            else:
                settings.setdefault(text[0], " ".join(text[1:]))
    occupation = settings.get("occupation_type", "").split()
    spin = settings.get("spin")
    other = {k: settings[k] for k in AIMS_SETTINGS_IN_OTHER if k in settings}
    if species_lines:
        digest = hashlib.sha256("\n".join(species_lines).encode()).hexdigest()[:16]
        other["species_defaults_sha256"] = digest
    kpoints = None
    if "k_grid" in settings:
        kpoints = "mesh " + "x".join(settings["k_grid"].split())
        if "k_offset" in settings:
            kpoints += " offset " + " ".join(settings["k_offset"].split())
    basis = "; ".join(f"{s}={levels[s] or 'as given'}" for s in sorted(levels)) or None
    return Method(
        code="FHI-aims", code_version=version, xc=settings.get("xc"), kpoints=kpoints,
        smearing=occupation[0] if occupation else None,
        smearing_width_eV=_number(occupation[1]) if len(occupation) > 1 else None,
        spin={"none": "none", "collinear": "collinear"}.get(spin, spin),
        basis=basis, relativistic=settings.get("relativistic"),
        other=", ".join(f"{k}={v}" for k, v in sorted(other.items())) or None,
    )


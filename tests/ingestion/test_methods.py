"""The DFT method of every configuration: read from what each real output states (values
below read by hand from the files, with the line they come from), given by the user for
extxyz, per frame through the key map, and never contradicting the file."""

from __future__ import annotations

import json

import ase.io
import pytest
from ase.units import Ry

from helpers import DFT, SHARED_FILES, cli, emt_frames, needs_shared
from mlipstore.params import IngestParams
from mlipstore.store.method import SETTINGS, Method
from mlipstore.store.store import Store

PBE_TI = "PAW_PBE Ti 08Apr2002"
# Hand-read: each value with the line of the file that states it. Settings not listed
# are stated nowhere in the file and must be null.
EXPECTED = {
    "dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml": {
        "code": "VASP",                     # <i name="program">vasp </i>
        "code_version": "6.3.0",            # <i name="version">6.3.0  </i>
        "xc": "PBE",                        # GGA "--" (POTCAR's), POTCAR PAW_PBE Ti
        "cutoff_eV": 350.0,                 # <i name="ENCUT">    350.00000000</i>
        "kpoints": "spacing 5 1/A, Monkhorst-Pack",  # KSPACING 5.0, KGAMMA F
        "smearing": "Methfessel-Paxton 1",  # ISMEAR 1
        "smearing_width_eV": 0.2,           # SIGMA 0.2
        "spin": "none",                     # ISPIN 1, LNONCOLLINEAR F, LSORBIT F
        "pseudopotentials": f"Ti={PBE_TI}",  # atomtypes: PAW_PBE Ti 08Apr2002
        "other": "LASPH=F, LREAL=T, PREC=Accurate",  # LASPH F, LREAL T, PREC accura
    },
    "dpdata/tests/poscars/Ti-O-Ti-v6/OUTCAR": {
        "code": "VASP",
        "code_version": "6.3.0",            # " vasp.6.3.0 20Jan22 (build ..."
        "xc": "PBE",                        # GGA = --, POTCAR: PAW_PBE Ti / O
        "cutoff_eV": 350.0,                 # ENCUT  =  350.0 eV
        "kpoints": "spacing 10 1/A, Monkhorst-Pack",  # INCAR: KSPACING = 10.0, KGAMMA = False
        "smearing": "Methfessel-Paxton 1",  # ISMEAR =     1
        "smearing_width_eV": 0.2,           # SIGMA  =   0.20
        "spin": "none",                     # ISPIN  =      1
        "pseudopotentials": f"O=PAW_PBE O 08Apr2002; Ti={PBE_TI}",  # POTCAR: lines
        "other": "LASPH=F, LREAL=T, PREC=Accurate",  # LASPH = F, LREAL = T, PREC = accura
    },
    "dpdata/tests/poscars/OUTCAR.h2o.md": {
        "code": "VASP",
        "code_version": "5.4.4.18Apr17-6-g9f103f2a35",  # " vasp.5.4.4.18Apr17-6-g9f103f2a35"
        "xc": "PBE",                        # GGA = --, POTCAR: PAW_PBE O / H (LEXCH = PE)
        "cutoff_eV": 800.0,                 # ENCUT  =  800.0 eV
        "kpoints": "mesh 1x1x1",            # generate k-points for:    1    1    1
        "smearing": "gaussian",             # ISMEAR =     0
        "smearing_width_eV": 0.05,          # SIGMA  =   0.05
        "spin": "none",                     # ISPIN  =      1
        "pseudopotentials": "H=PAW_PBE H 15Jun2001; O=PAW_PBE O 08Apr2002",
        "other": "LASPH=T, LREAL=T, PREC=Accurate",  # LASPH = T, LREAL = T, PREC = a
    },
    "dpdata/tests/qe.scf/02.out": {
        "code": "Quantum ESPRESSO",
        "code_version": "5.1.1",            # Program PWSCF v.5.1.1 starts
        "xc": "SCAN",                       # Exchange-correlation = SCAN ( 0 0 0 0 0 4)
        "cutoff_eV": 300.0 * Ry,            # kinetic-energy cutoff = 300.0000 Ry
        "density_cutoff_eV": 1200.0 * Ry,   # charge density cutoff = 1200.0000 Ry
        "kpoints": "gamma",                 # number of k points= 1, k(1) = (0 0 0)
        "pseudopotentials": "H=H.tm.pbe.UPF md5:4b614d66af87240b7a5107bfa527a767; "
                            "O=O.tm.pbe.UPF md5:9773ed85979454d2005060f61e4c2afb",
    },
    "q-e/test-suite/pw_md/benchmark.out.git.inp=md.in.args=1": {
        "code": "Quantum ESPRESSO",
        "code_version": "7.4",              # Program PWSCF v.7.4 starts
        "xc": "SLA PZ NOGX NOGC",           # Exchange-correlation= SLA  PZ   NOGX NOGC
        "cutoff_eV": 8.0 * Ry,              # kinetic-energy cutoff = 8.0000 Ry
        "density_cutoff_eV": 32.0 * Ry,     # charge density cutoff = 32.0000 Ry
        "kpoints": "gamma",                 # number of k points= 1, k(1) = (0 0 0)
        "pseudopotentials": "Si=Si.pz-vbc.UPF md5:9f25e6ff280f3123e9b3a84715b2e9c9",
    },
    "dpdata/tests/fhi_aims/out_scf": {
        "code": "FHI-aims",
        "code_version": "180126",           # Version 180126
        "xc": "pw-lda",                     # xc                 pw-lda
        "kpoints": "mesh 8x8x8",            # k_grid 8 8 8
        "smearing": "gaussian",             # occupation_type    gaussian 0.01
        "smearing_width_eV": 0.01,
        "spin": "none",                     # spin               none
        "basis": "B=tight; N=tight",        # Suggested "tight" defaults for B / N atom
        "relativistic": "atomic_zora scalar",  # relativistic       atomic_zora scalar
        # charge 0; and a hash of the species blocks' lines (their content, not read by
        # hand: checked below to change when a basis function is uncommented)
        "other": "charge=0, species_defaults_sha256=",
    },
    # extxyz files state no DFT method
    "ACEpotentials.jl/tutorials/TiAl_tutorial.xyz": {},
    "BOTNet-datasets/dataset_3BPA/train_300K.xyz": {},
}


def stored_methods(store_dir) -> tuple[list[dict | None], list[str | None]]:
    table = Store(store_dir).scan(columns=["method", "method_fingerprint"])
    return table.column("method").to_pylist(), table.column("method_fingerprint").to_pylist()


@needs_shared
def test_every_shared_file_is_listed():
    assert set(EXPECTED) == set(SHARED_FILES)
    on_disk = {p.relative_to(DFT).as_posix() for p in DFT.rglob("*") if p.is_file()}
    assert on_disk == set(SHARED_FILES)


@needs_shared
@pytest.mark.parametrize("relpath", sorted(SHARED_FILES))
def test_each_file_ingests_with_the_method_it_states(tmp_path, relpath):
    key_map = SHARED_FILES[relpath]
    store = tmp_path / "store"
    cli("ingest", DFT / relpath, "--store", store, "--quiet",
        *(["--key-map", key_map] if key_map else []))
    records, prints = stored_methods(store)
    assert len(records) == len(ase.io.read(DFT / relpath, index=":"))
    want = EXPECTED[relpath]
    if not want:
        assert records == [None] * len(records) and prints == [None] * len(prints)
        return
    for record in records:
        assert set(record) == set(SETTINGS)
        for setting in SETTINGS:
            expected, got = want.get(setting), record[setting]
            if setting == "other" and expected and expected.endswith("sha256="):
                assert got.startswith(expected) and len(got) == len(expected) + 16
            elif isinstance(expected, float):
                assert got == pytest.approx(expected, rel=1e-12), setting
            else:
                assert got == expected, setting
    assert set(prints) == {Method(**records[0]).fingerprint}
    assert len(prints[0]) == 16


@needs_shared
def test_vasprun_and_outcar_read_the_same_tags_the_same_way():
    """Two runs of one dpgen setup (same INCAR but KSPACING, NSW; Ti vs Ti+O): one as
    vasprun.xml, one as OUTCAR. Their records differ in just those settings."""
    from mlipstore.ingestion.methods import vasp_out, vasp_xml

    xml = vasp_xml(DFT / "dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml").stated()
    outcar = vasp_out(DFT / "dpdata/tests/poscars/Ti-O-Ti-v6/OUTCAR").stated()
    assert set(xml) == set(outcar)
    assert {k for k in SETTINGS if xml.get(k) != outcar.get(k)} == {"kpoints",
                                                                    "pseudopotentials"}


@needs_shared
def test_an_aims_basis_change_changes_the_fingerprint(tmp_path):
    text = (DFT / "dpdata/tests/fhi_aims/out_scf").read_text()
    copy = tmp_path / "out_scf"
    first_tier = "  #     hydro 2 p 1.4"
    assert text.count(first_tier) == 1
    copy.write_text(text.replace(first_tier, "        hydro 2 p 1.4"))
    store = tmp_path / "store"
    cli("ingest", DFT / "dpdata/tests/fhi_aims/out_scf", copy, "--store", store,
        "--format", "aims-output", "--quiet")
    records, prints = stored_methods(store)
    assert len(set(prints)) == 2
    assert records[0]["basis"] == records[1]["basis"]  # the same stated level ...
    assert records[0]["other"] != records[1]["other"]  # ... but other basis functions


def test_extxyz_method_from_the_command_line_and_per_frame(tmp_path):
    frames = emt_frames(4)
    for k, atoms in enumerate(frames):
        atoms.info["dft_xc"] = "PBE" if k < 3 else "PBEsol"
    path = tmp_path / "emt.extxyz"
    ase.io.write(path, frames)
    store = tmp_path / "store"
    cli("ingest", path, "--store", store, "--quiet", "--key-map", "xc=dft_xc",
        "--method", "code=VASP,xc=LDA,cutoff_eV=520,kpoints=spacing 0.2 1/A")
    records, prints = stored_methods(store)
    assert [r["xc"] for r in records] == ["PBE", "PBE", "PBE", "PBEsol"]  # the frame's wins
    assert {(r["code"], r["cutoff_eV"], r["kpoints"]) for r in records} == {
        ("VASP", 520.0, "spacing 0.2 1/A")}
    assert prints[0] == prints[1] == prints[2] != prints[3]
    info = json.loads(cli("info", "--store", store, "--json").output)
    assert {k: v["n_configs"] for k, v in info["methods"].items()} == {
        prints[0]: 3, prints[3]: 1}
    assert info["methods"][prints[3]]["settings"]["xc"] == "PBEsol"
    text = cli("info", "--store", store).output
    assert "DFT methods    2" in text and "PBEsol" in text

    # the same numbers with another stated method are other configurations; the same
    # method again adds nothing
    cli("ingest", path, "--store", store, "--quiet", "--key-map", "xc=dft_xc",
        "--method", "code=VASP,cutoff_eV=520,kpoints=spacing 0.2 1/A")
    assert len(Store(store).ids()) == 4
    cli("ingest", path, "--store", store, "--quiet", "--method", "code=VASP")
    assert len(Store(store).ids()) == 8


@needs_shared
def test_a_method_contradicting_the_file_rejects_it(tmp_path):
    store = tmp_path / "store"
    result = cli("ingest", DFT / "dpdata/tests/qe.scf/02.out", "--store", store, "--quiet",
                 "--method", "xc=PBE,code_version=5.1.1", expect=1)
    assert "xc='PBE' where the file states 'SCAN'" in result.output
    assert "nothing committed" in result.output
    # settings the file does not state are filled in
    cli("ingest", DFT / "dpdata/tests/qe.scf/02.out", "--store", store, "--quiet",
        "--method", "smearing=none (fixed occupations)")
    (record,), _ = stored_methods(store)
    assert record["smearing"] == "none (fixed occupations)" and record["xc"] == "SCAN"


def test_bad_method_text_is_a_usage_error(tmp_path):
    path = tmp_path / "emt.extxyz"
    ase.io.write(path, emt_frames(1))
    for text, needle in (("xcc=PBE", "unknown method setting 'xcc'"),
                         ("cutoff_eV=high", "not a number"), ("PBE", "setting=value")):
        result = cli("ingest", path, "--store", tmp_path / "s", "--method", text, expect=2)
        assert needle in result.output, text
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="unknown method setting 'xcc'"):
        IngestParams(methods={"*.xyz": "xcc=PBE"})
    with pytest.raises(ValueError, match="unknown quantity 'enrgy'"):
        IngestParams(key_maps={"*.xyz": "enrgy=E"})
    assert IngestParams(methods={"*.xyz": {"code": "VASP", "cutoff_eV": 520}})


def test_fingerprint_covers_the_stated_settings_but_not_the_version():
    base = Method(code="VASP", code_version="6.3.0", xc="PBE", cutoff_eV=520.0)
    assert base.covers == ("code", "xc", "cutoff_eV")
    assert Method(code="VASP", code_version="6.4.2", xc="PBE", cutoff_eV=520.0
                  ).fingerprint == base.fingerprint
    assert Method(code="VASP", xc="PBE", cutoff_eV=520.0 + 1e-9).fingerprint != \
        base.fingerprint
    assert Method(code="VASP", xc="PBE", cutoff_eV=520.0, spin="none").fingerprint != \
        base.fingerprint  # a setting stated by one source and not by another
    assert Method(code_version="1").fingerprint is None  # nothing that counts is stated
    # the value is part of every stored id: it must not change between versions
    assert base.fingerprint == "f5189a2070cb295a"


def test_filter_by_fingerprint_or_unknown(tmp_path):
    from mlipstore.store.filters import ScanFilter

    path = tmp_path / "emt.extxyz"
    ase.io.write(path, emt_frames(2))
    other = tmp_path / "emt2.extxyz"
    ase.io.write(other, emt_frames(3, seed=5))
    store = tmp_path / "store"
    cli("ingest", path, "--store", store, "--quiet")
    cli("ingest", other, "--store", store, "--quiet", "--method", "code=ASE,xc=EMT")
    emt = Method(code="ASE", xc="EMT").fingerprint
    s = Store(store)
    for chosen, rows in ((["unknown"], 2), ([emt], 3), ([emt, "unknown"], 5), (["0" * 16], 0)):
        assert s.scan(ScanFilter(method_fingerprints=chosen)).num_rows == rows, chosen
    out = tmp_path / "x.pckl.gzip"
    cli("export", "--store", store, "-o", out, "--quiet", "--method-fingerprint", "unknown")
    assert "wrote 2 configurations" in cli(
        "export", "--store", store, "-o", out, "--quiet", "--method-fingerprint",
        "unknown").output

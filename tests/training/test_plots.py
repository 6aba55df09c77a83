"""Pictures (issue 15, item 8): static PNGs of the fit beside DVC's Vega plots, a dimer
plot with a sensible symlog axis and the shortest distance in the training data, and
`mlipstore info --plot` histograms that read well and say where they went."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ase.io
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from ase import Atoms
from ase.build import bulk

from helpers import BIN, DEMO, SMALL_FIT, cli, emt_frames, new_project, run, split_extxyz
from mlipstore.potentials.registry import register
from mlipstore.store.store import Store
from mlipstore.training.metrics import (
    dimer_linthresh,
    parity_figures,
    plot_distributions,
    shortest_distances,
    summarize,
    write_dimer_curves,
)
from mlipstore.training.reference import LennardJones

IMAGES = ["plots/parity_energy.png", "plots/parity_forces.png", "plots/errors.png",
          "plots/dimer.png"]


def png_size(path) -> tuple[int, int]:
    """Width and height of a PNG file (asserting it is one)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


def test_train_stage_writes_images_that_dvc_shows(tmp_path):
    root = new_project(tmp_path / "proj", SMALL_FIT)
    split_extxyz(DEMO, [(root / "data" / "raw" / "a_TiAl_tutorial.xyz", 0, 80)])
    for stage in ("validate", "ingest", "export", "select", "train"):
        run([str(BIN / "mlipstore"), "stage", stage, "--quiet"], root)
    for name in IMAGES:
        width, height = png_size(root / name)
        assert 400 <= width <= 2000 and 350 <= height <= 2000, (name, width, height)
        assert (root / name).stat().st_size > 10_000, name  # drawn, not blank
    # declared as image plots, beside the CSV (Vega) ones that stay
    declared = yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
    assert set(IMAGES) <= {p for p in declared if isinstance(p, str)}
    assert {"energy_parity", "forces_parity"} <= {k for p in declared if isinstance(p, dict)
                                                   for k in p}
    shown = json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)["data"]
    for name in IMAGES:
        assert [p["type"] for p in shown[name]] == ["image"], name
    assert shown["energy_parity"][0]["type"] == "vega"


def _prediction(n: int, seed: int, scale: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    atoms = rng.integers(1, 6, n)
    forces = [rng.normal(size=(k, 3)) for k in atoms]
    energy = rng.normal(size=n) * atoms
    return pd.DataFrame({
        "energy_corrected": energy, "energy_pred": energy + scale * atoms * rng.normal(size=n),
        "forces": forces, "forces_pred": [f + scale * rng.normal(size=f.shape) for f in forces],
        "NUMBER_OF_ATOMS": atoms})


def _diagonal(ax) -> bool:
    return any(line.get_label() == "y = x" and np.array_equal(line.get_xdata(),
                                                              line.get_ydata())
               for line in ax.get_lines())


def test_parity_figures_have_the_diagonal_and_the_rmse():
    train, test = _prediction(30, 1, 0.01), _prediction(8, 2, 0.03)
    figures = parity_figures(train, test)
    assert set(figures) == {"parity_energy", "parity_forces", "errors"}
    m = {"train": summarize(train), "test": summarize(test)}
    for name, key, unit in (("parity_energy", "energy", "meV/atom"),
                            ("parity_forces", "forces", "meV/Å")):
        (ax,) = figures[name].axes
        assert _diagonal(ax), name
        assert ax.get_xlim() == ax.get_ylim()
        assert ax.get_title().endswith(f"RMSE train {m['train'][f'{key}_rmse']:.1f}, "
                                       f"test {m['test'][f'{key}_rmse']:.1f} {unit}")
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels[0].startswith("train: ") and labels[1].startswith("test: ")
    # the energies are pacemaker's energy_corrected: DFT minus the references
    energy_ax = figures["parity_energy"].axes[0]
    assert energy_ax.get_xlabel() == "DFT energy - references (eV/atom)"
    # the histograms: energy error per atom (meV/atom) and force components (meV/Å)
    errors = figures["errors"].axes
    assert [ax.get_xlabel() for ax in errors] == ["ACE - DFT (meV/atom)", "ACE - DFT (meV/Å)"]
    for ax in errors:
        assert len(ax.patches) == 2  # train and test
        assert all("RMSE" in t.get_text() for t in ax.get_legend().get_texts())
    # delta learning: the targets are minus the baseline too; no test set: train only
    figures = parity_figures(train, None, {"type": "ZBL"})
    assert figures["parity_energy"].axes[0].get_xlabel() == \
        "DFT energy - references - ZBL baseline (eV/atom)"
    assert "test" not in figures["parity_forces"].axes[0].get_title()
    assert _diagonal(figures["parity_forces"].axes[0])


def test_shortest_distances_per_element_pair():
    al = bulk("Al", "fcc", a=4.05)  # one atom: the shortest distance is to its images
    dimer = Atoms("TiAl", positions=[[0, 0, 0], [0, 0, 2.3]], pbc=False)
    far = Atoms("TiTi", positions=[[0, 0, 0], [0, 0, 4.5]], pbc=False)
    found = shortest_distances([al, dimer, far], cutoff=4.0)
    assert found == {"Al-Al": pytest.approx(4.05 / np.sqrt(2)), "Al-Ti": pytest.approx(2.3)}
    assert shortest_distances([far], cutoff=5.0) == {"Ti-Ti": pytest.approx(4.5)}


def test_dimer_linthresh_follows_the_wells():
    assert dimer_linthresh([np.zeros(5)]) == 0.1  # nothing attractive: 0.1 eV
    assert dimer_linthresh([np.array([5.0, -0.03, 0.0])]) == 0.1
    assert dimer_linthresh([np.array([5.0, -0.3, 0.0]), np.array([1.0, -3.2, 0.0])]) == 5.0


@pytest.mark.parametrize("epsilon", [3.0, 0.05])
def test_dimer_plot_is_linear_through_the_wells_and_marks_the_data(tmp_path, epsilon):
    from test_delta import _unfitted_yace  # a real .yace without training

    lj = LennardJones(5.0, {"Al": {"epsilon": epsilon, "sigma": 2.6},
                            "Ti": {"epsilon": epsilon / 2, "sigma": 2.8}})
    potential = register(_unfitted_yace(tmp_path, ["Al", "Ti"]),
                         {"elements": ["Al", "Ti"], "baseline": lj.describe(),
                          "params": {"training": {"reference_potential": "lj"}}},
                         tmp_path / "models")
    training = [Atoms("AlTi", positions=[[0, 0, 0], [0, 0, 2.4]], pbc=False),
                bulk("Al", "fcc", a=4.05)]
    plots = tmp_path / "plots"
    fig = write_dimer_curves(potential, plots, 5.0, training_structures=training)
    assert png_size(plots / "dimer.png")[0] >= 500
    (ax,) = fig.axes
    linthresh = ax.yaxis.get_transform().linthresh
    curves = [line.get_ydata() for line in ax.get_lines() if line.get_label() in
              ("Al-Al", "Al-Ti", "Ti-Ti")]
    assert len(curves) == 3
    depth = -min(c.min() for c in curves)
    assert depth == pytest.approx(0.92 * epsilon, rel=0.02)  # LJ, shifted to 0 at 5 Å
    # every attractive part lies in the linear band: no bend at matplotlib's 2 eV default
    assert depth <= linthresh <= 2.5 * depth + 0.1 and linthresh != 2.0
    # the shortest distances in the training data, per pair, as labelled vertical lines
    marks = {line.get_label().split(":")[0]: line.get_xdata()[0] for line in ax.get_lines()
             if "shortest in training data" in line.get_label()}
    assert marks == {"Al-Al": pytest.approx(4.05 / np.sqrt(2)), "Al-Ti": pytest.approx(2.4)}


class _Collapsing:
    """A model that collapses below 1.5 Å (as a plain fit can) with a 0.5 eV well."""

    meta = {"elements": ["Cu"], "baseline": None,
            "params": {"training": {"reference_potential": "none"}}}
    path = Path("potential_gen_01.yace")

    def dimer_energies(self, a, b, r):
        return np.where(r < 1.5, -1e4 * (1.5 - r), -0.5 * np.exp(-((r - 2.5) ** 2)))


def test_a_collapse_below_the_data_stays_on_the_log_scale(tmp_path):
    training = [bulk("Cu", "fcc", a=3.6)]  # shortest Cu-Cu: 2.55 Å
    fig = write_dimer_curves(_Collapsing(), tmp_path, 5.0, training_structures=training)
    (ax,) = fig.axes
    assert ax.yaxis.get_transform().linthresh == 0.5  # the well, not the collapse
    assert ax.get_ylim()[0] < -1000  # the collapse is drawn, on the log side
    assert "linear within ±0.5" in ax.get_ylabel()


def _store_of_several_sizes(tmp_path) -> Store:
    from mlipstore import ingest

    frames = emt_frames(4)  # 8 atoms, Cu and Au-Cu
    for atoms, repeat in zip(emt_frames(5, seed=3), [(1, 1, 1), (1, 1, 2), (1, 2, 2),
                                                     (1, 1, 3), (1, 1, 5)], strict=True):
        big = atoms.repeat(repeat)
        big.calc = atoms.calc.__class__()
        big.get_potential_energy()
        frames.append(big)
    path = tmp_path / "mixed.traj"
    ase.io.write(path, frames)
    store = Store(tmp_path / "store", create=True)
    ingest([path], store)
    return store


COLUMNS = ["n_atoms", "energy", "free_energy", "max_force", "chemical_system"]


def test_info_plot_bins_atom_counts_and_says_where_it_wrote(tmp_path):
    store = _store_of_several_sizes(tmp_path)
    fig = plot_distributions(store.scan(columns=COLUMNS), tmp_path / "dist.png")
    energy_ax, _, atoms_ax, systems_ax = fig.axes
    # one bin per atom count, centred on it
    edges = sorted({p.get_x() for p in atoms_ax.patches})
    assert np.allclose(np.diff(edges), 1.0) and np.allclose(np.mod(edges, 1), 0.5)
    assert all(float(t).is_integer() for t in atoms_ax.get_xticks())
    assert len(energy_ax.get_xticks()) <= 8
    assert all(t.get_rotation() > 0 for t in energy_ax.get_xticklabels())
    assert len(systems_ax.patches) == 2  # Cu and Au-Cu
    # counts over a wide range: bins of a few atoms, still on integer boundaries
    wide = pa.table({"n_atoms": np.arange(1, 301), "energy": -np.arange(1.0, 301.0),
                     "free_energy": np.full(300, np.nan), "max_force": np.ones(300) / 7,
                     "chemical_system": ["Cu"] * 300})
    _, force_ax, atoms_ax, _ = plot_distributions(wide, tmp_path / "wide.png").axes
    edges = sorted({p.get_x() for p in atoms_ax.patches})
    assert np.allclose(np.diff(edges), 6) and np.allclose(np.mod(edges, 1), 0.5)
    assert "bins of 6" in atoms_ax.get_xlabel()
    assert not force_ax.patches and "0.143 eV/Å" in force_ax.texts[0].get_text()
    # one value only: said in words, not drawn as one wide bar
    only = tmp_path / "only.xyz"
    ase.io.write(only, emt_frames(3, symbols="Ni"), format="extxyz")
    cli("ingest", only, "--store", tmp_path / "ni", "--quiet")
    fig = plot_distributions(Store(tmp_path / "ni").scan(columns=COLUMNS), tmp_path / "ni.png")
    _, _, atoms_ax, systems_ax = fig.axes
    assert not atoms_ax.patches and "8" in atoms_ax.texts[0].get_text()
    assert not systems_ax.patches and "Ni" in systems_ax.texts[0].get_text()
    # the command says where it wrote the picture (on stderr with --json)
    out = tmp_path / "pictures" / "dist.png"
    result = cli("info", "--store", tmp_path / "ni", "--plot", out)
    assert f"wrote {out}" in result.stdout
    assert png_size(out)[0] >= 600
    result = cli("info", "--store", tmp_path / "ni", "--plot", out, "--json")
    assert json.loads(result.stdout)["n_configs"] == 3
    assert f"wrote {out}" in result.stderr

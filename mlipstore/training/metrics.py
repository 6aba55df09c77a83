"""Fit metrics and parity data from pacemaker's prediction pickles.

pacemaker writes ``train_pred.pckl.gzip`` (and ``test_pred.pckl.gzip`` when a test set
is given) after the fit, with ``energy_corrected``/``energy_pred`` (eV) and
``forces``/``forces_pred`` (eV/Angstrom) per structure. Energy errors are per atom
(meV/atom); force errors are over all Cartesian components (meV/Angstrom), as pacemaker
reports them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PARITY_POINTS = 5000  # force components kept for a plot: enough to see, small to diff
IMAGE_POINTS = 200_000  # force components drawn in a parity PNG at most


def errors(pred: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reference and predicted energy per atom (eV/atom) and force components (eV/Å)."""
    n_atoms = np.array([len(np.asarray(f).reshape(-1, 3)) for f in pred["forces"]], dtype=int)
    return {
        "energy_dft": pred["energy_corrected"].to_numpy(dtype=float) / n_atoms,
        "energy_ace": pred["energy_pred"].to_numpy(dtype=float) / n_atoms,
        "forces_dft": np.concatenate([np.ravel(f) for f in pred["forces"]] or [np.empty(0)]),
        "forces_ace": np.concatenate([np.ravel(f) for f in pred["forces_pred"]]
                                     or [np.empty(0)]),
    }


def summarize(pred: pd.DataFrame) -> dict[str, float | int]:
    """RMSE and MAE of energy (meV/atom) and forces (meV/Å) and the structure count."""
    e = errors(pred)
    de = 1000 * (e["energy_ace"] - e["energy_dft"])
    df = 1000 * (e["forces_ace"] - e["forces_dft"])
    return {
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "energy_mae": float(np.mean(np.abs(de))),
        "forces_rmse": float(np.sqrt(np.mean(df**2))),
        "forces_mae": float(np.mean(np.abs(df))),
        "n_structures": len(pred),
    }


def calculator_errors(calc, structures, energies, forces) -> dict[str, float | int]:
    """``summarize`` of the ASE calculator ``calc`` on ``structures`` against the
    reference ``energies`` (eV, per structure) and ``forces`` (eV/Å)."""
    energy_pred, forces_pred = [], []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        energy_pred.append(atoms.get_potential_energy())
        forces_pred.append(atoms.get_forces())
    return summarize(pd.DataFrame({"energy_corrected": np.asarray(energies, dtype=float),
                                   "energy_pred": energy_pred, "forces": list(forces),
                                   "forces_pred": forces_pred}))


def write_parity(pred: pd.DataFrame, energy_csv: Path, forces_csv: Path,
                 seed: int = 0) -> None:
    """Parity data for ``dvc plots``: DFT vs ACE energy per atom and force components."""
    e = errors(pred)
    _write_csv(energy_csv, ["dft", "ace"], zip(e["energy_dft"], e["energy_ace"], strict=True))
    keep = np.arange(len(e["forces_dft"]))
    if len(keep) > PARITY_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(keep, PARITY_POINTS, replace=False))
    _write_csv(forces_csv, ["dft", "ace"],
               zip(e["forces_dft"][keep], e["forces_ace"][keep], strict=True))


def parity_figures(train: pd.DataFrame, test: pd.DataFrame | None = None,
                   baseline: dict | None = None) -> dict[str, Figure]:
    """Static pictures of a fit, readable without a browser or network (``dvc plots``
    draws its Vega plots with scripts from a CDN): ``parity_energy`` (eV/atom) and
    ``parity_forces`` (force components, eV/Å), ACE against the fit's targets with the
    line y = x and the RMSE in the title, and ``errors``, histograms of the energy error
    per atom (meV/atom) and of the force-component error (meV/Å); train and test in each.

    The targets are what pacemaker fitted: ``energy_corrected``, the DFT energy minus the
    per-element reference energies, and the DFT forces, both minus the delta-learning
    ``baseline`` (the export's description of it) where there is one."""
    from matplotlib.figure import Figure

    sets = [(name, errors(p)) for name, p in (("train", train), ("test", test))
            if p is not None and len(p)]
    minus = f" - {baseline['type']} baseline" if baseline else ""
    figures = {}
    for name, key, title, xlabel, ylabel, unit, what in (
            ("parity_energy", "energy", "Energy per atom",
             f"DFT energy - references{minus} (eV/atom)", "ACE energy (eV/atom)",
             "meV/atom", "structures"),
            ("parity_forces", "forces", "Force components",
             f"DFT force component{minus} (eV/Å)", "ACE force component (eV/Å)",
             "meV/Å", "components")):
        fig = Figure(figsize=(5.8, 5.8))
        ax = fig.subplots()
        rmse = _parity_axes(ax, sets, key, what, unit)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title}: RMSE {rmse}")
        fig.tight_layout()
        figures[name] = fig
    fig = Figure(figsize=(11, 4.5))
    for ax, key, label, unit in zip(fig.subplots(1, 2), ("energy", "forces"),
                                    ("energy error per atom", "force-component error"),
                                    ("meV/atom", "meV/Å"), strict=True):
        _error_histogram(ax, sets, key, unit)
        ax.set(xlabel=f"ACE - DFT{minus} ({unit})", title=label,
               ylabel=f"fraction of {'structures' if key == 'energy' else 'components'}",
               yscale="linear" if key == "energy" else "log")
    fig.tight_layout()
    figures["errors"] = fig
    return figures


def write_parity_images(plots: Path, train: pd.DataFrame, test: pd.DataFrame | None = None,
                        baseline: dict | None = None) -> list[Path]:
    """``parity_figures`` as ``plots/parity_energy.png``, ``parity_forces.png`` and
    ``errors.png``; returns the paths."""
    plots.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in parity_figures(train, test, baseline).items():
        paths.append(plots / f"{name}.png")
        _save_png(fig, paths[-1])
    return paths


def _rmse_text(values: list[tuple[str, float]], unit: str) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in values) + f" {unit}"


def _parity_axes(ax, sets, key: str, what: str, unit: str, seed: int = 0) -> str:
    """ACE against DFT for each set, with y = x; returns the RMSE text (meV units)."""
    low, high, rmses = np.inf, -np.inf, []
    for k, (name, e) in enumerate(sets):
        x, y = e[f"{key}_dft"], e[f"{key}_ace"]
        if not len(x):
            continue
        rmse = 1000 * float(np.sqrt(np.mean((y - x) ** 2)))
        rmses.append((name, rmse))
        shown = np.arange(len(x))
        note = ""
        if len(x) > IMAGE_POINTS:
            shown = np.random.default_rng(seed).choice(shown, IMAGE_POINTS, replace=False)
            note = f", {IMAGE_POINTS} drawn"
        ax.plot(x[shown], y[shown], ls="none", marker="o", ms=4, alpha=0.6, mew=0,
                color=f"C{k}", label=f"{name}: {len(x)} {what}{note}, RMSE {rmse:.1f} {unit}")
        low, high = min(low, x.min(), y.min()), max(high, x.max(), y.max())
    if not np.isfinite(low):
        low, high = -1.0, 1.0
    pad = 0.04 * (high - low) or 0.1
    low, high = low - pad, high + pad
    ax.plot([low, high], [low, high], color="black", lw=0.8, ls="--", label="y = x")
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal")
    ax.legend(fontsize="small", loc="upper left")
    return _rmse_text(rmses, unit) if rmses else "no data"


def _error_histogram(ax, sets, key: str, unit: str) -> None:
    """Histograms of ACE - DFT (meV units), each as fractions of its set, with the RMSE
    and MAE in the legend."""
    diffs = [(name, 1000 * (e[f"{key}_ace"] - e[f"{key}_dft"])) for name, e in sets]
    diffs = [(name, d) for name, d in diffs if len(d)]
    if not diffs:
        return
    every = np.concatenate([d for _, d in diffs])
    edges = np.histogram_bin_edges(every, bins="auto")
    if len(edges) > 81:
        edges = np.histogram_bin_edges(every, bins=80)
    for k, (name, d) in enumerate(diffs):
        rmse = float(np.sqrt(np.mean(d**2)))
        ax.hist(d, bins=edges, weights=np.full(len(d), 1 / len(d)), histtype="step",
                lw=1.5, color=f"C{k}",
                label=f"{name}: RMSE {rmse:.1f}, MAE {np.mean(np.abs(d)):.1f} {unit}")
    ax.axvline(0, color="grey", lw=0.5)
    ax.legend(fontsize="small")


def write_dimer_curves(potential, plots: Path, r_max: float, r_min: float = 0.5,
                       points: int = 120, training_structures=None) -> Figure:
    """Energy of every element pair's dimer from r_min to r_max (Angstrom), as the
    deployed model (ACE + baseline) gives it: ``plots/dimer/A-B.csv`` for ``dvc plots``
    and ``plots/dimer.png`` to look at. Short-range behaviour is where a fit without a
    repulsive reference fails, so the PNG marks each pair's shortest distance in
    ``training_structures`` (ASE Atoms, the training set): to the left of it the model is
    extrapolating. The energy axis is linear up to the deepest well beyond those distances
    (at least 0.1 eV) and logarithmic outside, so the attractive part of every curve is
    drawn without a kink, while a collapse at short range still shows on a log scale.
    Returns the figure (already saved)."""
    from matplotlib.figure import Figure

    elements = potential.meta["elements"]
    r = np.linspace(r_min, r_max, points)
    curves = {}
    for i, a in enumerate(elements):
        for b in elements[i:]:
            energy = potential.dimer_energies(a, b, r)
            _write_csv(plots / "dimer" / f"{a}-{b}.csv", ["r", "energy"],
                       zip(r, energy, strict=True))
            curves[f"{a}-{b}"] = energy - energy[-1]
    shortest = (shortest_distances(training_structures, r_max)
                if training_structures is not None else {})
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    sampled = []  # each curve where the training data has the pair (its wells)
    for k, (pair, energy) in enumerate(curves.items()):
        ax.plot(r, energy, color=f"C{k}", label=pair)
        d = shortest.get(_pair_key(*pair.split("-")))
        sampled.append(energy[r >= d] if d is not None else energy)
        if d is not None and r_min <= d <= r_max:
            ax.axvline(d, color=f"C{k}", ls="--", lw=1,
                       label=f"{pair}: shortest in training data, {d:.2f} Å")
    baseline = potential.meta.get("baseline")
    reference = potential.meta["params"]["training"]["reference_potential"]
    linthresh = dimer_linthresh(sampled)
    # the linear band (wells) gets about a third of the height however high the wall goes
    every = np.concatenate(list(curves.values()))
    decades = np.log10(max(float(np.nanmax(np.abs(every))), linthresh) / linthresh)
    ax.set_yscale("symlog", linthresh=linthresh, linscale=max(1.0, decades / 3))
    if np.nanmin(every) >= -linthresh:  # nothing beyond the band: no empty decades
        ax.set_ylim(bottom=-linthresh)
    if np.nanmax(every) <= linthresh:
        ax.set_ylim(top=linthresh)
    _symlog_ticks(ax, linthresh)
    ax.set(xlabel="distance (Å)",
           ylabel=f"E(r) - E(r_max) (eV)\nlinear within ±{linthresh:g}, log beyond",
           title=f"{potential.path.stem}: dimers (reference {reference}"
                 f"{', delta' if baseline else ''})")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save_png(fig, plots / "dimer.png")
    return fig


def _symlog_ticks(ax, linthresh: float) -> None:
    """Ticks at 0, +-linthresh/2 and +-linthresh in the linear band and at powers of ten
    (at most about eight) outside it; matplotlib's own leave the band unlabelled."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    low, high = ax.get_ylim()
    ticks = [t for t in (-linthresh, -linthresh / 2, 0.0, linthresh / 2, linthresh)
             if low <= t <= high]
    for sign, end in ((1, high), (-1, -low)):
        if end <= linthresh:
            continue
        first, last = int(np.floor(np.log10(linthresh))) + 1, int(np.floor(np.log10(end)))
        step = max(1, -(-(last - first + 1) // 4))
        ticks += [sign * 10.0**k for k in range(last, first - 1, -step)
                  if 10.0**k > 4 * linthresh]

    def label(value, _):
        k = np.log10(abs(value)) if value else 0.0
        if abs(value) >= 1000 and float(k).is_integer():
            return f"${'-' if value < 0 else ''}10^{{{int(k)}}}$"
        return f"{value:g}"

    ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_locator(FixedLocator([]))


def dimer_linthresh(curves) -> float:
    """The linear range of the dimer plot's symlog axis (eV): the deepest well of
    ``curves`` (energies relative to the longest distance), at least 0.1 eV, rounded up
    to 1, 2 or 5 times a power of ten. matplotlib's default (2 eV) bends every curve
    with a deeper well at -2 eV and squashes shallow ones into the linear band."""
    depth = max((-float(np.nanmin(c)) for c in curves if np.size(c)), default=0.0)
    x = max(depth, 0.1)
    power = 10.0 ** np.floor(np.log10(x))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= x * (1 - 1e-9)))


def shortest_distances(structures, cutoff: float) -> dict[str, float]:
    """The shortest distance (Å) between atoms of each element pair over ``structures``
    (ASE Atoms; periodic images count), keyed ``"Al-Ti"`` (symbols in alphabetical
    order). Pairs never closer than ``cutoff`` are left out. ASE's neighbour list takes
    about 2-3 ms for a small cell and 10-15 ms for 128 atoms at 5 Å."""
    from ase.data import chemical_symbols
    from ase.neighborlist import neighbor_list

    best: dict[tuple[int, int], float] = {}
    for atoms in structures:
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        if not len(d):
            continue
        z = atoms.numbers
        keys = np.minimum(z[i], z[j]) * 1000 + np.maximum(z[i], z[j])
        unique, inverse = np.unique(keys, return_inverse=True)
        low = np.full(len(unique), np.inf)
        np.minimum.at(low, inverse, d)
        for key, value in zip(unique, low, strict=True):
            pair = (int(key) // 1000, int(key) % 1000)
            best[pair] = min(best.get(pair, np.inf), float(value))
    return {_pair_key(chemical_symbols[a], chemical_symbols[b]): d
            for (a, b), d in sorted(best.items())}


def _pair_key(a: str, b: str) -> str:
    return "-".join(sorted((a, b)))


def _save_png(fig, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows((f"{a:.8g}", f"{b:.8g}") for a, b in rows)


def plot_distributions(table, path: Path) -> Figure:
    """Histograms of a store (or a filtered part): energy per atom (force-consistent,
    eV/atom), largest force (eV/Å), atoms per configuration (one bin per atom count, or
    per few where the counts span more than 50), configurations per chemical system.
    A panel whose data is a single value says so instead of drawing one bar. Written as
    a PNG; returns the figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n_atoms = table.column("n_atoms").to_numpy()
    energy = table.column("free_energy").to_numpy(zero_copy_only=False)
    energy = np.where(np.isnan(energy), table.column("energy").to_numpy(), energy)
    systems = table.column("chemical_system").value_counts().to_pylist()
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    per_atom = energy / n_atoms
    per_atom = per_atom[np.isfinite(per_atom)]
    if not _single_value(axes[0, 0], per_atom, "energy per atom", "{:.4f} eV/atom"):
        axes[0, 0].hist(per_atom, bins=50)
        axes[0, 0].set(xlabel="energy per atom (eV/atom)", ylabel="configurations")
        axes[0, 0].xaxis.set_major_locator(MaxNLocator(nbins=6))
        axes[0, 0].tick_params(axis="x", labelrotation=30)
    max_force = table.column("max_force").to_numpy(zero_copy_only=False)
    max_force = max_force[np.isfinite(max_force)]
    if not _single_value(axes[0, 1], max_force, "largest atomic force", "{:.3f} eV/Å"):
        axes[0, 1].hist(max_force, bins=50)
        axes[0, 1].set(xlabel="largest atomic force (eV/Å)", yscale="log")
    if not _single_value(axes[1, 0], n_atoms, "atoms per configuration", "{:d}"):
        low, high = int(n_atoms.min()), int(n_atoms.max())
        width = max(1, -(-(high - low + 1) // 50))
        axes[1, 0].hist(n_atoms, bins=np.arange(low, high + width + 1, width) - 0.5)
        axes[1, 0].set(xlabel="atoms per configuration"
                              + (f" (bins of {width})" if width > 1 else ""),
                       ylabel="configurations")
        axes[1, 0].xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    systems = sorted(systems, key=lambda s: -s["counts"])
    if len(systems) == 1:
        _annotate(axes[1, 1], f"one chemical system: {systems[0]['values']}\n"
                              f"({systems[0]['counts']} configurations)")
    else:
        shown = systems[:20]
        axes[1, 1].barh([s["values"] for s in shown][::-1], [s["counts"] for s in shown][::-1])
        axes[1, 1].set(xlabel="configurations",
                       title=f"chemical systems ({len(shown)} of {len(systems)})"
                       if len(systems) > 20 else "chemical systems")
    fig.suptitle(f"{table.num_rows} configurations, {int(n_atoms.sum())} atoms")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(fig, path)
    return fig


def _single_value(ax, values: np.ndarray, what: str, fmt: str) -> bool:
    """Say so on ``ax`` (and return True) where ``values`` hold one value or none."""
    unique = np.unique(values)
    if len(unique) > 1:
        return False
    if not len(unique):
        _annotate(ax, f"{what}: no values")
    else:
        value = unique[0].item()
        _annotate(ax, f"{what}: {fmt.format(value)}\nin all {len(values)} configurations"
                  if len(values) > 1 else f"{what}: {fmt.format(value)}\n(one configuration)")
    return True


def _annotate(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set(xticks=[], yticks=[])

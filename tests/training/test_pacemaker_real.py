"""The exported DataFrame is what the real pacemaker and pace_select read."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import cli, emt_frames

BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "pacemaker").exists() and not shutil.which("pacemaker"),
                       reason="pacemaker (python-ace) is not installed"),
]

TINY_INPUT = {
    "cutoff": 4.5,
    "seed": 1,
    "potential": {
        "deltaSplineBins": 0.001,
        "elements": ["Au", "Cu"],
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled",
                               "fs_parameters": [1, 1], "ndensity": 1}},
        "bonds": {"ALL": {"radbase": "SBessel", "radparameters": [5.25], "rcut": 4.5,
                          "dcut": 0.01, "NameOfCutoffFunction": "cos"}},
        "functions": {"number_of_functions_per_element": 6,
                      "ALL": {"nradmax_by_orders": [4, 2], "lmax_by_orders": [0, 1]}},
    },
    "fit": {"loss": {"kappa": 0.3, "L1_coeffs": 1e-8, "L2_coeffs": 1e-8},
            "optimizer": "BFGS", "maxiter": 5},
    "backend": {"evaluator": "pyace", "batch_size": 50, "display_step": 50},
}


def _tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else shutil.which(name)


def test_export_trains_with_pacemaker_and_pace_select_reads_it(tmp_path):
    raw = tmp_path / "emt.extxyz"
    ase.io.write(raw, emt_frames(12, seed=3), format="extxyz")
    store = tmp_path / "store"
    cli("ingest", raw, "--store", store, "--quiet")
    data = tmp_path / "train.pckl.gzip"
    cli("export", "--store", store, "-o", data, "--quiet",
        "--reference-energy", "Cu=-0.01", "--reference-energy", "Au=0.02")

    work = tmp_path / "fit"
    work.mkdir()
    (work / "input.yaml").write_text(yaml.safe_dump({**TINY_INPUT, "data": {
        "filename": str(data)}}))
    fit = subprocess.run([_tool("pacemaker"), "input.yaml"], cwd=work, capture_output=True,
                         text=True, timeout=600)
    assert fit.returncode == 0, fit.stdout[-3000:] + fit.stderr[-3000:]
    potential = work / "output_potential.yaml"
    assert potential.exists()
    pred = pd.read_pickle(work / "train_pred.pckl.gzip", compression="gzip")
    exported = pd.read_pickle(data, compression="gzip")
    assert len(pred) == len(exported) == 12
    # pacemaker fitted exactly the targets we wrote: energy_corrected per structure
    assert np.allclose(np.sort(pred["energy_corrected"]), np.sort(exported["energy_corrected"]))
    assert np.all(np.isfinite(np.stack(pred["energy_pred"])))

    selected = tmp_path / "selected.pkl.gz"
    sel = subprocess.run([_tool("pace_select"), "-p", str(potential), "-m", "4", "-o",
                          str(selected), str(data)], cwd=work, capture_output=True, text=True,
                         timeout=600)
    assert sel.returncode == 0, sel.stdout[-3000:] + sel.stderr[-3000:]
    chosen = pd.read_pickle(selected, compression="gzip")
    assert 0 < len(chosen) <= 4
    assert set(chosen["name"]) <= set(exported["name"])


def test_maxvol_selection_in_batches_before_any_fit(tmp_path):
    """pace_select with an unfitted basis, working through the pool in batches (-b), as a
    pool too big for memory would need."""
    from mlipstore.params import AceBasisConfig
    from mlipstore.store.store import Store
    from mlipstore.training.export import pacemaker_frame
    from mlipstore.training.selection import MaxVolSelection

    raw = tmp_path / "emt.extxyz"
    ase.io.write(raw, emt_frames(16, seed=4, symbols="Al"), format="extxyz")
    cli("ingest", raw, "--store", tmp_path / "store", "--quiet")
    pool = pacemaker_frame(Store(tmp_path / "store").scan())
    basis = AceBasisConfig(r_cut=4.5, nradmax_by_orders=[6, 3], lmax_by_orders=[0, 2])
    # 4 batches of at most 5 structures (40 environments each)
    chosen = MaxVolSelection(basis, max_functions=10, batch_size=5).select(pool, 6)
    assert 0 < len(chosen) <= 6 and len(set(chosen)) == len(chosen)
    assert all(0 <= i < len(pool) for i in chosen)

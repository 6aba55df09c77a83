"""pacemaker's own DataFrames: read only with --trust-pickle, exported back unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import PACEMAKER_DATA, cli, needs_shared, tree_digest

pytestmark = needs_shared
PICKLES = sorted(PACEMAKER_DATA.rglob("*.pckl.gzip")) if PACEMAKER_DATA.is_dir() else []


@pytest.mark.parametrize("source", PICKLES, ids=lambda p: p.name)
def test_pickle_refused_without_consent(tmp_path, source):
    store = tmp_path / "store"
    result = cli("ingest", source, "--store", store, "--quiet", expect=1)
    assert "refusing to unpickle" in result.stderr and source.name in result.stderr
    assert "--trust-pickle" in result.stderr
    assert not list(store.glob("*.parquet"))


@pytest.mark.parametrize("source", PICKLES, ids=lambda p: p.name)
def test_pickle_round_trip(tmp_path, source):
    original = pd.read_pickle(source, compression="gzip")
    store = tmp_path / "store"
    cli("ingest", source, "--store", store, "--quiet", "--trust-pickle")
    out = tmp_path / "out.pckl.gzip"
    cli("export", "--store", store, "-o", out, "--quiet")
    exported = pd.read_pickle(out, compression="gzip")

    assert len(exported) == len(original)
    for (_, a), (_, b) in zip(original.iterrows(), exported.iterrows(), strict=True):
        assert np.array_equal(a["ase_atoms"].positions, b["ase_atoms"].positions)
        assert np.array_equal(a["ase_atoms"].numbers, b["ase_atoms"].numbers)
        assert np.array_equal(a["ase_atoms"].cell.array, b["ase_atoms"].cell.array)
        assert np.array_equal(np.asarray(a["forces"]).reshape(-1, 3), b["forces"])
        assert a["energy_corrected"] == b["energy_corrected"]
        assert a["energy"] == b["energy"]

    before = tree_digest(store)
    again = cli("ingest", source, "--store", store, "--quiet", "--trust-pickle")
    assert again.stdout.startswith("0 new, ")
    assert tree_digest(store) == before

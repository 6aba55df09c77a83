"""What users do today, and mlipstore's in-process reads, as small timed commands.

Each command runs in its own process (started by ``run.py``, which measures its wall time
and peak memory) and prints one JSON line; timings printed here exclude imports.

    python bench/peers.py ase-read FILE...                  ase.io.read of every frame
    python bench/peers.py ase-db-insert DB FILE...          read + insert into an ASE db
    python bench/peers.py pandas-export OUT FILE...         read + DataFrame + to_pickle
    python bench/peers.py ase-db-select DB ELEMENTS LO HI   elements subset, eV/atom window
    python bench/peers.py mlipstore-scan STORE ELEMENTS LO HI
"""

from __future__ import annotations

import json
import sys
import time

import ase.db
import ase.io
from ase.data import chemical_symbols

from generate import ELEMENTS


def ase_read(*files: str) -> dict:
    n = sum(len(ase.io.read(f, index=":")) for f in files)
    return {"configurations": n}


def ase_db_insert(db_path: str, *files: str) -> dict:
    """One transaction per file; energy per atom stored as a key so it can be queried."""
    n = 0
    with ase.db.connect(db_path) as db:
        for f in files:
            for atoms in ase.io.iread(f, index=":"):
                epa = atoms.get_potential_energy(force_consistent=True) / len(atoms)
                db.write(atoms, epa=epa)
                n += 1
    return {"configurations": n}


def pandas_export(out: str, *files: str) -> dict:
    """The plain path to a pacemaker DataFrame: read, build, pickle with gzip."""
    import pandas as pd

    frames = [a for f in files for a in ase.io.read(f, index=":")]
    energy = [a.get_potential_energy(force_consistent=True) for a in frames]
    df = pd.DataFrame({"ase_atoms": frames, "energy": energy,
                       "forces": [a.get_forces() for a in frames],
                       "energy_corrected": energy})
    df.to_pickle(out, compression="gzip")
    return {"configurations": len(df)}


def ase_db_select(db_path: str, elements: str, low: str, high: str) -> dict:
    """Rows made only of ``elements`` with energy per atom in [low, high] eV/atom."""
    allowed = set(elements.split(","))
    excluded = ",".join(f"{s}=0" for s in ELEMENTS if s not in allowed)
    query = f"{excluded},epa>={low},epa<={high}"
    db = ase.db.connect(db_path)
    start = time.perf_counter()
    rows = list(db.select(query))
    seconds = time.perf_counter() - start
    assert all({chemical_symbols[z] for z in r.numbers} <= allowed for r in rows)
    return {"seconds": seconds, "rows": len(rows), "query": query}


def mlipstore_scan(store: str, elements: str, low: str, high: str) -> dict:
    from mlipstore import ScanFilter, Store

    where = ScanFilter(elements=elements.split(","), min_energy_per_atom=float(low),
                       max_energy_per_atom=float(high))
    start = time.perf_counter()
    table = Store(store).scan(where)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": table.num_rows}


COMMANDS = {"ase-read": ase_read, "ase-db-insert": ase_db_insert,
            "pandas-export": pandas_export, "ase-db-select": ase_db_select,
            "mlipstore-scan": mlipstore_scan}

if __name__ == "__main__":
    command, *args = sys.argv[1:]
    print(json.dumps(COMMANDS[command](*args)))

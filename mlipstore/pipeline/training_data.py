"""TrainingData: a project's training data, from the inbox of DFT outputs to the files
pacemaker reads. The ingest, export and select stages of dvc.yaml call these methods.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

import ase
import ase.io
import pandas as pd

from .._io import atomic_write, file_sha256
from ..ingestion.ingest import IngestReport, ingest
from ..layout import Layout
from ..params import Params, load_params
from ..store.codec import elements_of
from ..store.configuration import Configuration, KeyMap
from ..store.method import Method
from ..store.store import Store
from ..training.export import ExportError, check_methods, pacemaker_frame, write_pickle_gzip
from ..training.selection import make_selection
from ..training.split import test_mask
from ..training.targets import TargetError


def read_own_pickle(path: Path) -> pd.DataFrame:
    """Read a DataFrame this pipeline wrote itself (never a pickle from elsewhere)."""
    return pd.read_pickle(path, compression="gzip")


class TrainingData:
    """A project's training data (paths: ``Layout``; settings: its params.yaml): DFT
    outputs into the inbox (``add_data``), the inbox into the store, the store into the
    pool and test files pacemaker reads (``export_for_pacemaker``), and the ids of the
    pool structures to train on (``select_training_set``). The original design called it
    ``DatasetBuilder``; that name still works."""

    def __init__(self, root: str | Path = ".", params: Params | None = None) -> None:
        self.layout = Layout(root)
        if params is None:
            params = load_params(self.layout.params) if self.layout.params.exists() else Params()
        self.params = params

    @property
    def store(self) -> Store:
        return Store(self.layout.store, create=True)

    # -- inbox -> store ------------------------------------------------------------------
    def add_data(self, dft_results: Iterable[str | Path | ase.Atoms], folder: str | None = None
                 ) -> list[Path]:
        """Drop DFT results into the inbox (into ``folder`` inside it, which becomes their
        tag); returns the new inbox files.

        Paths (files or directories) are copied; labelled ``ase.Atoms`` are written,
        losslessly, to one ASE trajectory named by its content. Nothing is parsed here:
        the ingest stage validates and stores the new files.
        """
        inbox = self.layout.inbox / folder if folder else self.layout.inbox
        inbox.mkdir(parents=True, exist_ok=True)
        added, atoms = [], []
        for item in dft_results:
            if isinstance(item, ase.Atoms):
                atoms.append(item)
            elif Path(item).is_dir():
                target = inbox / Path(item).name
                shutil.copytree(item, target, dirs_exist_ok=True)
                added.append(target)
            else:
                added.append(_copy_unique(Path(item), inbox))
        if atoms:
            ids = "".join(Configuration.from_atoms(a).id for a in atoms)
            path = inbox / f"added-{hashlib.sha256(ids.encode()).hexdigest()[:12]}.traj"
            with atomic_write(path, "wb") as fh:  # never a part-written inbox file
                ase.io.write(fh, atoms, format="traj")
            added.append(path)
        return added

    def _matching(self, patterns: dict, path: Path):
        """The value of the first glob of ``patterns`` that matches ``path`` (its path
        inside the inbox, or its name); None if none does."""
        inside = path.is_relative_to(self.layout.inbox)
        relative = (path.relative_to(self.layout.inbox) if inside else path).as_posix()
        for pattern, value in patterns.items():
            if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(path.name, pattern):
                return value
        return None

    def key_map_for(self, path: Path) -> KeyMap:
        """The key map of params.yaml ``ingest.key_maps`` whose glob matches ``path``."""
        return KeyMap.parse(self._matching(self.params.ingest.key_maps, path))

    def method_for(self, path: Path) -> Method | None:
        """The DFT method of params.yaml ``ingest.methods`` whose glob matches ``path``."""
        return Method.parse(self._matching(self.params.ingest.methods, path))

    def tags_for(self, path: Path) -> list[str]:
        """params.yaml ``ingest.tags``, plus the inbox folder a file sits in: files in
        ``data/raw/gen_03/`` are tagged ``gen_03``."""
        folders = path.relative_to(self.layout.inbox).parts[:-1]
        return [*self.params.ingest.tags, *folders[:1]]

    def ingest(self, progress: bool = False) -> IngestReport:
        """Ingest the inbox files that are not in the store yet (by file sha256)."""
        store = self.store
        self.layout.inbox.mkdir(parents=True, exist_ok=True)
        return ingest([self.layout.inbox], store, key_map=self.key_map_for,
                      method=self.method_for, tags=self.tags_for,
                      skip_sources=store.source_digests(),
                      progress=progress)

    # -- store -> pacemaker files --------------------------------------------------------
    def export_for_pacemaker(self, pool_path: Path | None = None, test_path: Path | None = None,
                             progress: bool = False) -> dict:
        """Write the training pool and the test set (pacemaker DataFrames); return a
        summary (counts, reference energies, DFT methods, store content hash)."""
        pool_path = pool_path or self.layout.pool
        test_path = test_path or self.layout.test
        p = self.params
        where = p.export.scan_filter()
        table = self.store.scan(where)
        if table.num_rows == 0:
            raise ExportError(f"no configurations in {self.layout.store} match the export "
                              "filters of params.yaml: nothing to train on")
        try:
            methods = check_methods(table, p.export.methods == "allow_mixed",
                                    where.method_fingerprints)
        except ExportError as err:
            raise ExportError(f"{self.layout.store}: {err}") from None
        is_test = test_mask(table.column("id").to_pylist(), p.split.test_fraction, p.split.seed)
        pool, test = table.filter(~is_test), table.filter(is_test)
        refs = None if p.export.reference_energies == "none" else p.export.reference_energies
        baseline = p.training.baseline()
        if baseline is not None:
            try:
                baseline.check_elements(elements_of(table))
            except ValueError as err:
                raise ExportError(str(err)) from err
        options = {"rereference": p.export.rereference,
                   "allow_mixed_references": p.export.allow_mixed_references}
        try:
            pool_frame = pacemaker_frame(pool, refs, baseline, progress, **options)
            refs = pool_frame.attrs["mlipstore"]["reference_energies"]  # "auto": the pool's
            test_frame = pacemaker_frame(test, refs, baseline, **options)
        except TargetError as err:
            raise ExportError(f"{self.layout.store}: {err}") from err
        # the store's tags (for weights by tag) and method fingerprints (for the lineage)
        # travel with the pool and test set
        for frame, rows in ((pool_frame, pool), (test_frame, test)):
            frame["tags"] = rows.column("tags").to_pylist()
            frame["method_fingerprint"] = rows.column("method_fingerprint").to_pylist()
        write_pickle_gzip(pool_frame, pool_path)
        write_pickle_gzip(test_frame, test_path)
        return {
            "n_pool": pool.num_rows,
            "n_test": test.num_rows,
            "reference_energies": refs,
            "targets": {"pool": pool_frame.attrs["mlipstore"]["targets"],
                        "test": test_frame.attrs["mlipstore"]["targets"]},
            "baseline": baseline.describe() if baseline is not None else None,
            "elements": elements_of(table),
            "methods": methods,
            "store_content_hash": self.store.content_hash(),
        }

    def select_training_set(self, method: str | None = None, n_structures: int | None = None,
                            potential: Path | None = None, pool_path: Path | None = None
                            ) -> list[str]:
        """Ids of the pool structures to train on (default: method and size of params.yaml).

        ``maxvol`` uses ``potential`` (e.g. the previous generation's .yaml) if given,
        else the unfitted basis of the TrainingConfig.
        """
        s = self.params.select
        pool = read_own_pickle(pool_path or self.layout.pool)
        basis = s.selection_basis(self.params.training.ace_basis_config)
        selection = make_selection(method or s.method, basis, s.seed, potential,
                                   s.max_basis_functions, s.batch_size)
        return selection.select_ids(pool, n_structures or s.n_structures)

    # the original design's name; "active set" is otherwise the potential's .asi
    select_active_set = select_training_set


DatasetBuilder = TrainingData  # the original design's name


def _copy_unique(source: Path, inbox: Path) -> Path:
    """Copy into the inbox; an equal file there is reused, a different one is not
    overwritten (the copy gets a content suffix)."""
    target = inbox / source.name
    if target.exists():
        if file_sha256(target) == file_sha256(source):
            return target
        target = inbox / f"{source.stem}-{file_sha256(source)[:8]}{source.suffix}"
    shutil.copyfile(source, target)
    return target

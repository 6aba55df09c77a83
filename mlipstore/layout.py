"""Where a project keeps things: every path of a project, defined here once (relative to
the project root; dvc.yaml and the templates name the same paths, which a test checks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def params_valid(self) -> Path:  # written once params.yaml is valid; every stage's dep
        return self.root / "data" / "params_valid.txt"

    @property
    def inbox(self) -> Path:  # raw DFT outputs waiting to be ingested
        return self.root / "data" / "raw"

    @property
    def store(self) -> Path:
        return self.root / "data" / "store"

    @property
    def export_dir(self) -> Path:
        return self.root / "data" / "export"

    @property
    def pool(self) -> Path:  # every exported configuration not in the test set
        return self.export_dir / "pool.pckl.gzip"

    @property
    def test(self) -> Path:
        return self.export_dir / "test.pckl.gzip"

    @property
    def export_summary(self) -> Path:
        return self.export_dir / "export.json"

    @property
    def selection(self) -> Path:
        return self.root / "data" / "selection" / "selected.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def explore_dir(self) -> Path:  # the active-learning loop: one folder per generation
        return self.root / "explore"

    def exploration(self, generation: int) -> Path:
        """What exploring generation ``generation``'s potential found (and its labels)."""
        return self.explore_dir / f"gen_{generation:02d}"

    @property
    def loop_metrics(self) -> Path:  # the newest generation's test and exploration figures
        return self.explore_dir / "loop.json"

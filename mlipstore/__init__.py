"""mlipstore: a versioned store of DFT training data for ACE potentials fitted with pacemaker.

Data flow: raw DFT files -> ``readers`` -> ``ingest`` -> ``store`` (Parquet shards)
-> ``export`` (fit targets: ``targets``; other trainers: ``trainers``) / ``selection``
(``DatasetBuilder``) -> ``pacemaker`` (``PacemakerRunner``) -> ``potentials`` (registry,
lineage); ``pipeline`` and ``cli`` are thin shells over these. The active-learning loop
(``loop``): ``explore`` (MD watching the extrapolation grade) -> ``oracle`` (labels) ->
``workflow`` (``TrainingPhase``: add, reproduce, register).
"""

from importlib import import_module

from .configuration import Configuration, FrameError, KeyMap
from .filters import ScanFilter
from .ingest import IngestReport, Rejection, ingest
from .readers import FileError, iread
from .store import Store, StoreError

# the rest is imported on first use, so `mlipstore ingest` does not pay for pandas,
# pydantic or pacemaker (PEP 562)
_LAZY = {
    "config": ["ConfigError", "Params", "TrainingConfig", "load_params"],
    "dataset": ["DatasetBuilder"],
    "explore": ["Exploration", "explore"],
    "export": ["ExportError", "export_for_pacemaker", "pacemaker_frame"],
    "loop": ["ActiveLearningLoop"],
    "oracle": ["CalculatorOracle", "label"],
    "pacemaker": ["PacemakerError", "PacemakerRunner"],
    "potentials": ["Potential", "list_potentials"],
    "selection": ["MaxVolSelection", "RandomSelection", "Selection"],
    "targets": ["TargetError", "fit_targets", "implied_references"],
    "trainers": ["ExtxyzKeys", "grace_frame", "write_extxyz"],
    "workflow": ["DFTResult", "TrainingPhase", "WorkflowState"],
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}
__all__ = [
    "ActiveLearningLoop", "CalculatorOracle", "Exploration", "explore", "label",
    "ConfigError", "Configuration", "DatasetBuilder", "ExportError", "FileError",
    "FrameError", "IngestReport", "KeyMap", "MaxVolSelection", "PacemakerError",
    "PacemakerRunner", "Params", "Potential", "RandomSelection", "Rejection", "ScanFilter",
    "Selection", "Store", "StoreError", "TargetError", "TrainingConfig", "DFTResult",
    "TrainingPhase", "WorkflowState", "ExtxyzKeys", "export_for_pacemaker", "fit_targets",
    "grace_frame", "implied_references", "ingest", "iread", "list_potentials",
    "load_params", "pacemaker_frame", "write_extxyz",
]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'mlipstore' has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)

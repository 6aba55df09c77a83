"""mlipstore: a versioned store of DFT training data for ACE potentials fitted with pacemaker.

The package follows the data::

    raw DFT files --ingestion--> store --training--> potentials --pipeline--> loop
    (VASP, QE,      (formats,     (Parquet   (export, targets,   (registry,    (dvc.yaml
     aims, extxyz,   ingest)       shards,    reference, split,   screening)    stages,
     DataFrames)                   versions)  selection,                        cycle,
                                              pacemaker, metrics)               explore,
                                                                                oracle, loop)

Each layer imports only from the layers before it (tested): ``store`` knows nothing of
how files are parsed or how potentials are trained. Beside them: ``params`` (params.yaml,
``TrainingConfig``), ``layout`` (every path of a project), ``errors`` (``MlipstoreError``
and its subclasses), ``project`` (``mlipstore init``, DVC remotes), and ``cli``, a thin
shell over all of it.

Names of the original design that now have clearer names keep working as aliases:
``DatasetBuilder`` (``TrainingData``), ``DatasetBuilder.select_active_set``
(``select_training_set``: it returns training ids; the active set is the potential's
``.asi``), ``TrainingPhase`` (``TrainingCycle``), ``WorkflowState`` (``CycleState``),
``WorkflowError`` (``CycleError``) and the function ``export_for_pacemaker``
(``export_store``). ``TrainingConfig``, ``Potential`` and ``PacemakerRunner`` keep theirs.
"""

from importlib import import_module

from .errors import (
    ConfigError,
    CycleError,
    ExportError,
    FileError,
    FrameError,
    MlipstoreError,
    PacemakerError,
    RegistryError,
    StoreError,
    TargetError,
    WorkflowError,
)
from .ingestion.formats import iread
from .ingestion.ingest import IngestReport, Rejection, ingest
from .store.configuration import Configuration, KeyMap
from .store.filters import ScanFilter
from .store.store import Store, StoreReader

# the rest is imported on first use, so `mlipstore ingest` does not pay for pandas,
# pydantic or pacemaker (PEP 562)
_LAZY = {
    "params": ["Params", "TrainingConfig", "load_params"],
    "pipeline.training_data": ["TrainingData", "DatasetBuilder"],
    "pipeline.explore": ["Exploration", "explore"],
    "training.export": ["export_store", "export_for_pacemaker", "pacemaker_frame"],
    "pipeline.loop": ["ActiveLearningLoop"],
    "pipeline.oracle": ["CalculatorOracle", "label"],
    "training.pacemaker": ["PacemakerRunner"],
    "potentials.registry": ["Potential", "list_potentials"],
    "training.selection": ["MaxVolSelection", "RandomSelection", "Selection"],
    "training.targets": ["fit_targets", "implied_references"],
    "training.trainers": ["ExtxyzKeys", "grace_frame", "write_extxyz"],
    "pipeline.cycle": ["DFTResult", "TrainingCycle", "CycleState", "TrainingPhase",
                       "WorkflowState"],
    "store.versions": ["RevisionStore", "open_store"],
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}
__all__ = [
    "ActiveLearningLoop", "CalculatorOracle", "ConfigError", "Configuration", "CycleError",
    "CycleState", "DFTResult", "DatasetBuilder", "ExportError", "Exploration", "ExtxyzKeys",
    "FileError", "FrameError", "IngestReport", "KeyMap", "MaxVolSelection", "MlipstoreError",
    "PacemakerError", "PacemakerRunner", "Params", "Potential", "RandomSelection",
    "RegistryError", "Rejection", "RevisionStore", "ScanFilter", "Selection", "Store",
    "StoreError", "StoreReader", "TargetError", "TrainingConfig", "TrainingCycle",
    "TrainingData", "TrainingPhase", "WorkflowError", "WorkflowState", "explore",
    "export_for_pacemaker", "export_store", "fit_targets", "grace_frame", "implied_references",
    "ingest", "iread", "label", "list_potentials", "load_params", "open_store",
    "pacemaker_frame", "write_extxyz",
]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'mlipstore' has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)

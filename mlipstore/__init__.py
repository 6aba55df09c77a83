"""mlipstore: a versioned store of DFT training data for ACE potentials fitted with pacemaker.

Data flow: raw DFT files -> ``readers`` -> ``ingest`` -> ``store`` (Parquet shards)
-> ``export`` / ``selection`` (``DatasetBuilder``) -> ``pacemaker`` (``PacemakerRunner``)
-> ``potentials`` (registry, lineage); ``pipeline`` and ``cli`` are thin shells over these.
"""

from .config import ConfigError, Params, TrainingConfig, load_params
from .configuration import Configuration, FrameError, KeyMap
from .dataset import DatasetBuilder
from .export import ExportError, export_for_pacemaker, pacemaker_frame
from .filters import ScanFilter
from .ingest import IngestReport, Rejection, ingest
from .pacemaker import PacemakerError, PacemakerRunner
from .potentials import Potential, list_potentials
from .readers import FileError, iread
from .selection import MaxVolSelection, RandomSelection, Selection
from .store import Store, StoreError
from .workflow import DFTResult, TrainingPhase, WorkflowState

__all__ = [
    "ConfigError", "Configuration", "DatasetBuilder", "ExportError", "FileError",
    "FrameError", "IngestReport", "KeyMap", "MaxVolSelection", "PacemakerError",
    "PacemakerRunner", "Params", "Potential", "RandomSelection", "Rejection", "ScanFilter",
    "Selection", "Store", "StoreError", "TrainingConfig", "DFTResult", "TrainingPhase",
    "WorkflowState", "export_for_pacemaker", "ingest",
    "iread", "list_potentials", "load_params", "pacemaker_frame",
]

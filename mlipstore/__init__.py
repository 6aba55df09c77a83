"""mlipstore: a versioned store of DFT training data for ACE potentials fitted with pacemaker.

Data flow: raw DFT files -> ``readers`` -> ``ingest`` -> ``store`` (Parquet shards)
-> ``export`` (pacemaker DataFrame).
"""

from .configuration import Configuration, FrameError, KeyMap
from .export import ExportError, export_for_pacemaker, pacemaker_frame
from .filters import ScanFilter
from .ingest import IngestReport, Rejection, ingest
from .readers import FileError, iread
from .store import Store, StoreError

__all__ = [
    "Configuration", "ExportError", "FileError", "FrameError", "IngestReport", "KeyMap",
    "Rejection", "ScanFilter", "Store", "StoreError", "export_for_pacemaker", "ingest",
    "iread", "pacemaker_frame",
]

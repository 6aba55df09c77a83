"""mlipstore's errors: one hierarchy with ``MlipstoreError`` at its root.

Every error a user can cause (bad input, a bad setting, a missing thing) is one of these,
with a message that names the file, the frame or the key and says why; the CLI prints it
and exits with status 1 (the traceback only with ``-v``). Each also derives from the
built-in class it used to be, so ``except ValueError`` keeps working. Anything else that
escapes is a bug in mlipstore or in a tool it runs.
"""


class MlipstoreError(Exception):
    """Something mlipstore was asked cannot be done; the message says what and why."""


# -- input and settings ------------------------------------------------------------------
class ConfigError(MlipstoreError, ValueError):
    """params.yaml is not valid; the message names the key, the value and why."""


class FileError(MlipstoreError, ValueError):
    """A whole file that cannot be read; the message says why."""


class FrameError(MlipstoreError, ValueError):
    """A frame that cannot be stored; the message says why."""


# -- the store ---------------------------------------------------------------------------
class StoreError(MlipstoreError, RuntimeError):
    """The store cannot do what was asked; the message says why."""


class SchemaError(MlipstoreError, ValueError):
    """A shard this mlipstore cannot read: not a shard, or of a newer schema version."""


# -- export and training -----------------------------------------------------------------
class TargetError(MlipstoreError, ValueError):
    """The fit targets cannot be made as asked; the message says why."""


class ExportError(MlipstoreError, ValueError):
    """The export cannot be written; the message says why."""


class PacemakerError(MlipstoreError, RuntimeError):
    """pacemaker or one of its tools failed; the message holds the end of its log."""


# -- potentials, pipeline, project -------------------------------------------------------
class RegistryError(MlipstoreError, LookupError):
    """No such potential; the message lists what exists."""


class StageError(MlipstoreError, RuntimeError):
    """A stage could not finish; the message says why. Nothing was registered."""


class CycleError(MlipstoreError, RuntimeError):
    """A training cycle could not produce a new generation; the message says why."""


WorkflowError = CycleError  # the original design's name


class ProjectError(MlipstoreError, RuntimeError):
    """The project cannot be created; the message says why."""

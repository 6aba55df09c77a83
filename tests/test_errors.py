"""One error hierarchy: every error mlipstore raises on purpose is a MlipstoreError, and
the command line turns it into its message and exit status 1 in one place."""

from __future__ import annotations

import inspect

import mlipstore
from helpers import cli
from mlipstore import errors
from mlipstore.store import store
from mlipstore.training import export, pacemaker


def test_every_error_class_is_a_mlipstore_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, Exception)]
    assert len(classes) >= 12
    assert all(issubclass(c, errors.MlipstoreError) for c in classes)
    # the modules raise the very classes of errors.py, exported at the top
    assert store.StoreError is errors.StoreError is mlipstore.StoreError
    assert export.ExportError is errors.ExportError
    assert pacemaker.PacemakerError is errors.PacemakerError
    assert issubclass(errors.ConfigError, ValueError)  # `except ValueError` still works
    assert errors.WorkflowError is errors.CycleError


def test_the_cli_shows_the_message_and_the_traceback_only_with_verbose(tmp_path):
    absent = tmp_path / "no-store"
    quiet = cli("export", "--store", absent, "-o", tmp_path / "x.pckl.gzip", expect=1)
    assert f"Error: no store at {absent}" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    verbose = cli("-v", "export", "--store", absent, "-o", tmp_path / "x.pckl.gzip",
                  expect=1)
    assert "Traceback" in verbose.stderr and "StoreError" in verbose.stderr
    assert f"Error: no store at {absent}" in verbose.stderr
    # a stage names itself
    stage = cli("stage", "export", "--project", tmp_path, "--quiet", expect=1)
    assert stage.stderr.startswith("Error: stage export: ")

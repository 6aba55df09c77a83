"""The README stays true: its Python examples import what exists (and the store example
runs), and every `mlipstore` command line in it uses commands and options that exist."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil

import click
import pytest

from helpers import DEMO, REPO
from mlipstore.cli import main

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
COMMANDS = [line.split("#")[0].strip() for lang, code in BLOCKS if lang == "bash"
            for line in code.replace("\\\n", " ").splitlines()
            if line.strip().startswith("mlipstore ")]


def test_every_python_example_compiles_and_imports_what_exists():
    assert len(PYTHON) >= 6
    names = 0
    for code in PYTHON:
        compile(code, "README.md", "exec")
        for module, imported in re.findall(r"^from (mlipstore[\w.]*) import (.+)$", code, re.M):
            for name in imported.split(","):
                assert hasattr(importlib.import_module(module), name.strip()), (module, name)
                names += 1
    # names the prose calls by their module path, e.g. mlipstore.project.add_remote(...)
    for module, name in re.findall(r"`(mlipstore(?:\.\w+)+)\.(\w+)\(", README):
        assert hasattr(importlib.import_module(module), name), (module, name)
        names += 1
    assert names >= 12


def test_every_command_line_uses_existing_commands_and_options():
    assert len(COMMANDS) >= 20
    for line in COMMANDS:
        words = shlex.split(line.replace("[", " ").replace("]", " "))[1:]
        command = main
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        assert not isinstance(command, click.Group), f"no such command: {line}"
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in words:
            if word.startswith("-") and word != "-":
                assert word.split("=")[0] in known, f"{line}: {word} is no option of it"


def test_the_store_example_runs(tmp_path, monkeypatch):
    if not DEMO.exists():
        pytest.skip(f"the demo data {DEMO} is absent")
    [example] = [code for code in PYTHON if "export_store(store" in code]
    monkeypatch.chdir(tmp_path)  # a project of one's own, with the demo in its inbox
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copy(DEMO, tmp_path / "data" / "raw" / DEMO.name)
    names: dict = {}
    exec(compile(example, "README.md", "exec"), names)
    assert names["report"].new > 0 and names["table"].num_rows == len(names["atoms"]) > 0
    assert (tmp_path / "train.pckl.gzip").stat().st_size > 0

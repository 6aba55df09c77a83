"""The package follows the data: each layer imports only from itself and the layers
below it (store < ingestion < training with params.yaml < potentials < pipeline < the
shells), so the store never depends on parsing or training, and training never on the
pipeline."""

from __future__ import annotations

from helpers import REPO, imported_modules, module_name

# lowest first; a module's layer is its longest matching prefix
LAYERS = {
    # plumbing every layer uses: files, worker processes, git, errors, paths
    "mlipstore._io": 0, "mlipstore._workers": 0, "mlipstore._git": 0,
    "mlipstore.errors": 0, "mlipstore.layout": 0,
    "mlipstore.store": 1,
    "mlipstore.ingestion": 2,
    # params.yaml is the TrainingConfig: checked against pacemaker's input.yaml, and
    # making the baseline it names
    "mlipstore.training": 3, "mlipstore.params": 3,
    "mlipstore.potentials": 4,
    "mlipstore.pipeline": 5,
    # the shells: the public API, the command line, new projects
    "mlipstore": 6, "mlipstore.cli": 6, "mlipstore.project": 6,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return LAYERS[".".join(parts[:k])]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def violations(edited: dict[str, str] | None = None) -> list[str]:
    """Every import of a module from a layer above its own (``edited``: file -> source,
    to check changed copies)."""
    edited = edited or {}
    found = []
    for path in sorted((REPO / "mlipstore").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        here = module_name(path)
        for target in sorted(imported_modules(path, edited.get(rel))):
            if layer(target) > layer(here):
                found.append(f"{here} (layer {layer(here)}) imports {target} "
                             f"(layer {layer(target)})")
    return found


def test_no_module_imports_from_a_layer_above_it():
    modules = [module_name(p) for p in (REPO / "mlipstore").rglob("*.py")]
    assert len(modules) > 35
    assert {layer(m) for m in modules} == set(range(7))  # every layer holds code
    assert violations() == []


def test_a_wrong_import_is_found():
    """Deliberately wrong imports, inside a function too (where lazy imports hide)."""
    filters = "mlipstore/store/filters.py"
    source = (REPO / filters).read_text()
    wrong = source + "\n\ndef _late():\n    from ..training.export import export_store\n"
    assert violations({filters: wrong}) == [
        "mlipstore.store.filters (layer 1) imports mlipstore.training.export (layer 3)"]
    export = "mlipstore/training/export.py"
    wrong = (REPO / export).read_text().replace(
        "from ..store.store import", "from ..pipeline import cycle\nfrom ..store.store import")
    assert violations({export: wrong}) == [
        "mlipstore.training.export (layer 3) imports mlipstore.pipeline.cycle (layer 5)"]

"""The ``mlipstore`` command line: a thin shell over the library."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from .errors import MlipstoreError
from .ingestion.ingest import ingest
from .layout import Layout
from .store.configuration import KeyMap
from .store.filters import ScanFilter, criteria
from .store.method import SETTINGS, Method, differences, side_by_side
from .store.store import Store

DEFAULTS = Layout()  # every path default: relative to the working directory
store_option = click.option(
    "--store", "store_dir", default=str(DEFAULTS.store), show_default=True,
    type=click.Path(file_okay=False), help="Store directory.")
models_option = click.option(
    "--models", default=str(DEFAULTS.models), show_default=True,
    type=click.Path(file_okay=False), help="Registry directory.")


def filter_options(func):
    """One option per ScanFilter criterion (``filters.criteria``); the command gets the
    ScanFilter as ``where``."""
    names = []
    for field, kind in reversed(criteria()):
        declared = field.metadata["cli"] or f"--{field.name.replace('_', '-')}"
        name = f"filter_{field.name}"
        names.append((name, field.name, kind))
        if kind is bool:
            option = click.option(declared, name, default=None, help=field.metadata["help"])
        elif kind is list:  # repeatable, and each value may be comma-separated
            option = click.option(declared, name, multiple=True, help=field.metadata["help"])
        else:
            option = click.option(declared, name, type=kind, help=field.metadata["help"])
        func = option(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        given = {}
        for name, field_name, kind in names:
            value = kwargs.pop(name)
            if kind is list:
                value = [v for item in value for v in item.split(",") if v] or None
            given[field_name] = value
        try:
            where = ScanFilter(**given)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--elements") from err
        return func(*args, where=where, **kwargs)
    return wrapper


def _parse_references(items: tuple[str, ...]) -> dict[str, float]:
    refs = {}
    for item in items:
        symbol, sep, value = item.partition("=")
        try:
            refs[symbol.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"{item!r} is not SYMBOL=eV", param_hint="--reference-energy")
    return refs


class _Main(click.Group):
    """The command group: the one place where mlipstore's errors become messages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlipstoreError as err:
            # exit status 1 with the message; the traceback only for -v
            if ctx.params.get("verbose"):
                traceback.print_exc()
            raise click.ClickException(str(err)) from err


@click.group(cls=_Main)
@click.version_option(package_name="mlipstore")
@click.option("-v", "--verbose", is_flag=True,
              help="Log debug messages; print the traceback of an error.")
def main(verbose: bool) -> None:
    """A versioned store of DFT training data for ACE potentials (pacemaker)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # DVC prints its own lines (``dvc repro`` in cycle); through the root logger as well
    # each would appear twice
    logging.getLogger("dvc").propagate = False


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@store_option
@click.option("--format", "fmt", help="Reader format (ASE's names, or pacemaker-pickle); "
              "default: detected per file.")
@click.option("--key-map", help="Labels of non-standard files, e.g. "
              "energy=REF_energy,forces=REF_forces,stress=REF_stress or virial=virial; "
              "DFT method settings stated per frame, e.g. xc=dft_functional.")
@click.option("--method", "method_text", metavar="SETTING=VALUE,...",
              help="The DFT method of files that do not state it (extxyz, DataFrames), "
              "e.g. code=VASP,xc=PBE,cutoff_eV=520; for DFT outputs, settings they do not "
              "state. Settings: " + ", ".join(SETTINGS) + ".")
@click.option("--tag", "tags", multiple=True, help="Tag stored with every new configuration.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow reading pacemaker pickles (unpickling runs code from the file).")
@click.option("--require-finished", is_flag=True,
              help="Reject a DFT output whose run did not finish, whole (default: keep its "
              "complete steps, marked as from an unfinished run).")
@click.option("--strict", is_flag=True, help="Commit nothing if anything is rejected.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Processes that parse in parallel; default: all cores for 128 MiB of "
              "input or more, else 1.")
def ingest_cmd(paths, store_dir, fmt, key_map, method_text, tags, trust_pickle,
               require_finished, strict, quiet, jobs) -> None:
    """Add the DFT configurations in PATHS (files or directories) to the store, with the
    DFT method each file states."""
    try:
        km = KeyMap.parse(key_map)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--key-map") from err
    try:
        method = Method.parse(method_text)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--method") from err
    try:
        report = ingest(paths, Store(store_dir, create=True), format=fmt, key_map=km,
                        method=method, tags=tags, trust_pickle=trust_pickle,
                        require_finished=require_finished, strict=strict,
                        progress=not quiet, workers=jobs)
    except OSError as err:
        raise click.ClickException(f"cannot write to the store {store_dir}: {err}; nothing "
                                   "was committed and nothing stored was changed") from err
    for line in report.rejection_lines():
        click.echo(f"rejected: {line}", err=True)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@main.command("info")
@store_option
@click.option("--rev", help="Git revision (branch, tag, commit) to read the store at, "
              "through DVC without a checkout; default: the working tree.")
@click.option("--repo", default=".", show_default=True,
              help="Project directory or git URL; --store is relative to it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Also write histograms of the data (energy per atom, forces, sizes) as PNG.")
def info_cmd(store_dir, rev, repo, as_json, plot) -> None:
    """Summarise the store: configurations, atoms, elements, shards, bytes."""
    from .training.targets import source_references

    with _versioned_store(repo, rev, store_dir) as store:
        info = {**store.info(), "source_references": source_references(store)}
        if plot:
            from .training.metrics import plot_distributions

            plot_distributions(store.scan(columns=["n_atoms", "energy", "free_energy",
                                                   "max_force", "chemical_system"]), plot)
    if plot:  # on stderr, so that --json's output stays one JSON document
        click.echo(f"wrote {plot}", err=as_json)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"store          {info['store']}")
    click.echo(f"configurations {info['n_configs']} ({info['n_atoms']} atoms)")
    click.echo(f"elements       {' '.join(info['elements'])}")
    click.echo(f"shards         {info['n_shards']} ({info['bytes'] / 1e6:.2f} MB)")
    click.echo(f"with stress    {info['with_stress']}; "
               f"with free energy {info['with_free_energy']}; "
               f"with energy_corrected {info['with_energy_corrected']} "
               f"({info['n_configs'] - info['with_energy']} without a raw energy)")
    click.echo(f"with weights   {info['with_weights']}; from unfinished runs "
               f"{info['from_unfinished_runs']}")
    versions = ", ".join(f"version {v}: {n}" for v, n in info["schema_versions"].items())
    click.echo(f"schema         {versions} shard(s)")
    for source in info["source_references"]:
        click.echo(f"references     {source['source']}: {source['text']}")
    for name in ("formats", "chemical_systems", "tags"):
        if info[name]:
            items = ", ".join(f"{k}: {v}" for k, v in sorted(info[name].items()))
            click.echo(f"{name.replace('_', ' '):<14} {items}")
    methods = info["methods"]
    click.echo(f"DFT methods    {len(methods)} (configurations per method fingerprint)")
    for line in side_by_side(methods):
        click.echo(f"  {line}")


@main.command("diff")
@click.argument("rev_a")
@click.argument("rev_b", required=False)
@store_option
@click.option("--repo", default=".", show_default=True,
              help="Project directory or git URL the revisions refer to.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--summary", is_flag=True, help="Counts only, no ids.")
def diff_cmd(rev_a, rev_b, store_dir, repo, as_json, summary) -> None:
    """Configurations added and removed from REV_A to REV_B (default: the working tree),
    by content id, with counts per element, tag and DFT method, and the methods that are
    new or gone."""
    from .store.versions import clean_clones, diff_revisions

    try:
        diff = diff_revisions(repo, rev_a, rev_b, store_dir)
    finally:
        clean_clones()
    if as_json:
        click.echo(json.dumps(diff.to_dict(), indent=2))
        return
    if not summary:
        for prefix, ids in (("+", diff.added), ("-", diff.removed)):
            for config_id in ids:
                click.echo(f"{prefix} {config_id}")
    click.echo(f"{len(diff.added)} added, {len(diff.removed)} removed "
               f"({rev_a} -> {rev_b or 'working tree'})")
    for label, counts in (("added by element", diff.added_by_element),
                          ("removed by element", diff.removed_by_element),
                          ("added by tag", diff.added_by_tag),
                          ("removed by tag", diff.removed_by_tag),
                          ("added by method", _method_counts(diff.added_by_method)),
                          ("removed by method", _method_counts(diff.removed_by_method))):
        if counts:
            click.echo(f"{label:<18} {', '.join(f'{k}: {v}' for k, v in counts.items())}")
    changes = diff.method_changes()
    if changes["new"] or changes["gone"]:
        click.echo(f"DFT methods        {len(diff.methods_before)} -> "
                   f"{len(diff.methods_after)}; new: {', '.join(changes['new']) or 'none'}; "
                   f"gone: {', '.join(changes['gone']) or 'none'}")
        both = {**diff.methods_before, **diff.methods_after}
        for line in side_by_side(both, only=differences(both)):
            click.echo(f"  {line}")


def _method_counts(summary: dict[str, dict]) -> dict[str, int]:
    return {fingerprint: entry["n_configs"] for fingerprint, entry in summary.items()}


@main.command("export")
@store_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="File to write: pacemaker's or GRACE's .pckl.gzip, or .extxyz.")
@click.option("--format", "fmt", type=click.Choice(["pacemaker", "grace", "extxyz"]),
              default="pacemaker", show_default=True,
              help="pacemaker's DataFrame; GRACE's (gracemaker) DataFrame; extxyz for "
              "MACE, NequIP and Allegro (labels under REF_energy, REF_forces, REF_stress).")
@click.option("--reference-energy", "references", multiple=True, metavar="SYMBOL=eV",
              help="Isolated-atom energy subtracted into energy_corrected (repeatable).")
@click.option("--auto-references", is_flag=True,
              help="Fit the reference energies by least squares (the sources' own where "
              "some targets are theirs).")
@click.option("--rereference", is_flag=True,
              help="Recompute every fit target as energy - references, also where the "
              "source gave energy_corrected.")
@click.option("--allow-mixed-references", is_flag=True,
              help="Export targets made with different reference energies together.")
@click.option("--allow-mixed-methods", is_flag=True,
              help="Export configurations of different DFT methods (method fingerprints) "
              "together; default: refused, with a table of what differs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@filter_options
def export_cmd(store_dir, output, fmt, references, auto_references, rereference,
               allow_mixed_references, allow_mixed_methods, quiet, where) -> None:
    """Write the store (or a filtered part) as training data: a source's energy_corrected
    is the fit target as given; others are energy - references (none by default)."""
    from .training.export import export_store
    from .training.trainers import FORMATS

    if auto_references and references:
        raise click.UsageError("--auto-references and --reference-energy exclude each other")
    report = export_store(
        Store(store_dir), output, where,
        "auto" if auto_references else _parse_references(references),
        progress=not quiet, rereference=rereference,
        allow_mixed_references=allow_mixed_references,
        allow_mixed_methods=allow_mixed_methods, writer=FORMATS[fmt])
    targets = report.targets
    click.echo(f"wrote {report.n_structures} configurations ({report.n_atoms} atoms; "
               f"{' '.join(report.elements)}) to {report.path} ({fmt}); fit targets: "
               f"{targets['n_targets_from_source']} the source's energy_corrected, "
               f"{targets['n_targets_from_energy']} energy - references; DFT methods: "
               + ", ".join(f"{k} ({v['n_configs']})"
                           for k, v in report.methods["summary"].items()))


@main.command("compact")
@store_option
@click.option("--min-rows", type=int, default=50_000, show_default=True,
              help="Shards with fewer rows are merged.")
def compact_cmd(store_dir, min_rows) -> None:
    """Merge small shards into large ones (the old ones are removed)."""
    new = Store(store_dir).compact(min_rows)
    click.echo(f"compacted into {len(new)} shard(s)" if new else "nothing to compact")


@main.command("migrate")
@store_option
def migrate_cmd(store_dir) -> None:
    """Rewrite shards of older schema versions as the current version (ids and values
    unchanged). Not needed to read or add data: older shards are read as they are."""
    new, replaced = Store(store_dir).migrate()
    click.echo(f"migrated {replaced} shard(s) into {len(new)}" if new
               else "nothing to migrate: every shard has the current schema version")


@main.command("verify")
@store_option
def verify_cmd(store_dir) -> None:
    """Check every shard: checksum, Parquet page checksums, schema, row content hashes."""
    problems, counts = Store(store_dir).verify()
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    note = (f"; {counts['incomplete']} shard(s) of an unfinished write (removed by the next "
            "ingest)") if counts["incomplete"] else ""
    click.echo(f"verified {counts['shards']} shard(s), {counts['configurations']} "
               f"configurations: {len(problems)} problem(s){note}")
    if problems:
        sys.exit(1)


@main.command("stage")
@click.argument("name", type=click.Choice(["validate", "ingest", "export", "select", "train"]))
@click.option("--project", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Project root (with params.yaml).")
@click.option("--quiet", is_flag=True, help="No progress display.")
def stage_cmd(name, project, quiet) -> None:
    """Run one stage of dvc.yaml (dvc repro calls this)."""
    from .pipeline.stages import run_stage

    try:
        click.echo(run_stage(name, project, progress=not quiet))
    except MlipstoreError as err:  # the message names the stage
        raise click.ClickException(f"stage {name}: {err}") from err


@main.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--project", default=".", show_default=True, type=click.Path(file_okay=False))
def add_cmd(paths, project) -> None:
    """Copy DFT outputs into the project's inbox (data/raw); `dvc repro` ingests them."""
    from .pipeline.training_data import TrainingData

    for path in TrainingData(project).add_data(paths):
        click.echo(f"added {path}")


@main.command("potentials")
@models_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def potentials_cmd(models, as_json) -> None:
    """List the potential generations with their data and metrics."""
    from .potentials.registry import list_potentials

    rows = []
    for p in list_potentials(models):
        m = p.meta.get("metrics", {})
        rows.append({
            "generation": p.generation, "path": str(p.path), "created": p.meta.get("created"),
            "n_train": p.meta["train"]["n_structures"], "n_test": p.meta["test"]["n_structures"],
            "store_content_hash": p.meta["store"]["content_hash"],
            "git_commit": p.meta["git"]["commit"], "metrics": m,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no potentials in {models} yet (run 'dvc repro')")
        return
    click.echo(f"{'gen':>3}  {'train':>5} {'test':>5}  {'E rmse train/test':>19}  "
               f"{'F rmse train/test':>19}  {'created':<25} path")
    for r in rows:
        tr, te = r["metrics"].get("train", {}), r["metrics"].get("test", {})
        click.echo(f"{r['generation']:>3}  {r['n_train']:>5} {r['n_test']:>5}  "
                   f"{_pair(tr, te, 'energy_rmse'):>19}  {_pair(tr, te, 'forces_rmse'):>19}  "
                   f"{r['created'] or '':<25} {r['path']}")
    click.echo("energies in meV/atom, forces in meV/Å")


def _pair(train: dict, test: dict, key: str) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.1f}"
    return f"{fmt(train.get(key))} / {fmt(test.get(key))}"


@main.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--remote", help="Default DVC remote: a directory or a URL (s3://, ssh://); "
              "default: the directory DIRECTORY-dvc-remote beside the project.")
@click.option("--no-remote", is_flag=True, help="Configure no DVC remote.")
def init_cmd(directory, remote, no_remote) -> None:
    """Create a new project: git + DVC with a default remote, dvc.yaml, params.yaml and
    the inbox data/raw."""
    from .project import init_project

    if remote and no_remote:
        raise click.UsageError("--remote and --no-remote exclude each other")
    root = init_project(directory, remote, add_default_remote=not no_remote)
    click.echo(f"created {root}: put DFT outputs into {root}/data/raw (or 'mlipstore add'), "
               "then run 'dvc repro'")
    if not no_remote:
        from .project import DEFAULT_REMOTE_NAME, remote_url

        click.echo(f"'dvc push' sends data to the remote {DEFAULT_REMOTE_NAME}: "
                   f"{remote_url(root)}")


@main.command("cycle")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--project", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--no-commit", is_flag=True, help="Do not commit and tag the generation.")
def cycle_cmd(paths, project, no_commit) -> None:
    """Run one generation: add the DFT results in PATHS, `dvc repro`, register gen_NN."""
    from .pipeline.cycle import CycleState, TrainingCycle, results_from_files
    from .pipeline.training_data import TrainingData

    results = results_from_files(paths, TrainingData(project))
    for result in results:
        if not result.success:
            click.echo(f"skipped: {result.error}", err=True)
    phase = TrainingCycle(project, commit=not no_commit)
    potential = phase.run(results)
    good = sum(r.success for r in results)
    generation = CycleState.load(phase.state_path).generation
    click.echo(f"generation {generation:02d}: {good} new result(s), "
               f"{len(results) - good} skipped; {potential.path}")


def _floats(text: str | None, option: str) -> list[float] | None:
    """``300,1000`` -> [300.0, 1000.0]; anything else is a usage error naming ``option``."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint=option) from err


@main.command("explore")
@click.option("--project", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--potential", "which", default=None,
              help="Generation (gen_02, 2) or path; default: the latest.")
@click.option("--start", "start_file", type=click.Path(exists=True, dir_okay=False),
              help="Starting structures from this file instead of the store.")
@click.option("--ensemble", type=click.Choice(["langevin", "nvt", "npt"]))
@click.option("--temperatures", help="K, comma-separated, e.g. 300,1000.")
@click.option("--pressures", help="GPa, comma-separated (npt).")
@click.option("--steps", type=int)
@click.option("--timestep", "timestep_fs", type=float, help="fs.")
@click.option("--trajectories", type=int)
@click.option("--gamma-lower", type=float)
@click.option("--gamma-upper", type=float)
@click.option("--max-candidates", type=int)
@click.option("--workers", type=int, help="Processes (default: all cores).")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Folder of the results; default: explore/gen_NN of the project.")
def explore_cmd(project, which, start_file, ensemble, temperatures, pressures, steps,
                timestep_fs, trajectories, gamma_lower, gamma_upper, max_candidates,
                workers, output) -> None:
    """MD with a generation's potential, collecting the frames it extrapolates on.

    Settings come from params.yaml's `explore` section; the options override them."""
    import ase.io

    from .params import ExploreParams, load_params, with_overrides
    from .pipeline.explore import explore, pick_starts, write_exploration
    from .potentials.registry import Potential

    layout = Layout(Path(project))
    overrides = {
        "ensemble": ensemble, "temperatures_K": _floats(temperatures, "--temperatures"),
        "pressures_GPa": _floats(pressures, "--pressures"), "steps": steps,
        "timestep_fs": timestep_fs, "trajectories": trajectories, "gamma_lower": gamma_lower,
        "gamma_upper": gamma_upper, "max_candidates": max_candidates}
    base = load_params(layout.params).explore if layout.params.exists() else ExploreParams()
    settings = with_overrides(base, overrides, "the options")
    potential = Potential.load(which, layout.models)
    if start_file:
        starts = ase.io.read(start_file, ":")
    else:
        starts = pick_starts(layout.store, settings)
    out = Path(output) if output else layout.exploration(potential.generation)
    result = explore(potential, starts, settings, workers, progress=True)
    summary = write_exploration(result, out)
    for run in result.runs:
        click.echo(f"run {run.index}: {run.temperature_K:g} K, {run.steps_run} steps "
                   f"({run.stable_time_ps:g} ps), largest gamma {max(run.max_gamma):.3g}"
                   + (f"; stopped: {run.stopped}" if run.stopped else ""))
    click.echo(f"{summary['collected']} frames with gamma in ({settings.gamma_lower:g}, "
               f"{settings.gamma_upper:g}], {summary['candidates']} candidates "
               f"({potential.path.stem}); wrote {out}/candidates.extxyz, explore.json, "
               "gamma.png")


@main.command("loop")
@click.option("--project", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--generations", type=int, help="The last generation (default: params.yaml's "
              "loop.generations).")
@click.option("--oracle", help="module:factory of an ASE calculator, or 'external' "
              "(default: params.yaml's loop.oracle).")
@click.option("--dask", "dask_scheduler", help="Label on this Dask cluster (address or "
              "scheduler file).")
@click.option("--workers", type=int, help="Local label and MD processes.")
@click.option("--no-commit", is_flag=True, help="Do not commit and tag the generations.")
def loop_cmd(project, generations, oracle, dask_scheduler, workers, no_commit) -> None:
    """Active learning: explore -> label -> train, generation after generation.

    Resumable: run it again after a kill and it continues where it stopped."""
    from .params import load_params, with_overrides
    from .pipeline.loop import ActiveLearningLoop

    params = load_params(Layout(Path(project)).params)
    loop = with_overrides(params.loop, {"oracle": oracle, "dask_scheduler": dask_scheduler,
                                        "workers": workers}, "the options")
    runner = ActiveLearningLoop(project, params.model_copy(update={"loop": loop}),
                                commit=not no_commit, progress=True)
    reports = runner.run(generations)
    for r in reports:
        e = r.exploration
        test = (f"holdout {r.holdout['energy_rmse']:.1f} meV/atom, "
                f"{r.holdout['forces_rmse']:.1f} meV/Å; " if r.holdout else "")
        click.echo(f"generation {r.generation:02d}: {test}{100 * e['fraction_above_lower']:.1f}%"
                   f" of MD steps above gamma {e['gamma_lower']:g}, stable "
                   f"{e['stable_time_ps']['mean']:g} ps, {e['candidates']} candidates")
    click.echo(f"stopped: {reports[-1].stop}")


@main.command("screen")
@click.argument("candidates", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--potential", "which", default=None,
              help="Generation (gen_02, 2) or path; default: the latest.")
@models_option
@click.option("--gamma-threshold", default=1.0, show_default=True, type=float,
              help="Keep structures whose largest atomic gamma exceeds this.")
@click.option("--d-optimal", type=int, help="At most this many, chosen D-optimally.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="extxyz of the kept structures (gamma in their info), for DFT.")
def screen_cmd(candidates, which, models, gamma_threshold, d_optimal, output) -> None:
    """Extrapolation grade of each candidate structure; list the ones to compute with DFT."""
    from .potentials.registry import Potential
    from .potentials.screening import read_candidates, screen, write_candidates

    potential = Potential.load(which, models)
    pool = read_candidates(candidates)
    result = screen(potential, pool, gamma_threshold, d_optimal)
    chosen = result.chosen
    for c in chosen:
        click.echo(f"{c.gamma:10.3f}  {c.source}:{c.frame}")
    click.echo(f"{len(result.above)} of {len(pool)} structures above gamma {gamma_threshold} "
               f"({potential.path.stem})")
    if len(chosen) < len(result.above):
        click.echo(f"kept {len(chosen)} of them, chosen D-optimally against the active set "
                   f"(at most {d_optimal}; pace_select keeps only structures that add to it)")
    if output:
        write_candidates(chosen, output)
        click.echo(f"wrote {output}")


@contextlib.contextmanager
def _versioned_store(repo: str, rev: str | None, store_dir: str) -> Iterator[Store]:
    """The store of ``repo`` at ``rev`` (a local project's working tree without ``rev``),
    closed afterwards."""
    from .store.versions import clean_clones, open_store

    try:
        with open_store(repo, rev, store_dir) as store:
            yield store
    finally:
        if rev is not None:
            clean_clones()


if __name__ == "__main__":
    main()

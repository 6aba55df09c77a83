"""Labelling: candidate structures in, ``DFTResult``s out.

An oracle labels one structure. Built in: ``CalculatorOracle`` (any ASE calculator given
as ``module:factory``, e.g. ``ase.calculators.emt:EMT``) and ``write_dft_inputs`` (the
route of real DFT: the candidates become input folders; their outputs come back through
``mlipstore cycle``). ``label`` runs one task per structure: locally each in a process of
its own, or on a ``concurrent.futures`` executor such as a Dask cluster's
(``dask_executor``; dask-jobqueue puts its workers on Slurm/PBS/SGE/LSF nodes). Results
stream back as they finish; a task that raises, crashes or runs past the timeout is a
failed result.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import ase
import ase.io
import numpy as np

from .._io import atomic_write
from ..errors import ConfigError
from .cycle import DFTResult


@dataclass(frozen=True)
class CalculatorOracle:
    """RawFrame with the ASE calculator ``factory(**kwargs)``, ``factory`` given as
    ``module:name`` (built in the worker, so it need not pickle)."""

    factory: str
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.make()  # a wrong name fails here, not in every task

    def make(self):
        module, _, name = self.factory.partition(":")
        try:
            return getattr(importlib.import_module(module), name)(**self.kwargs)
        except (ImportError, AttributeError, TypeError) as err:
            raise ConfigError(f"oracle {self.factory!r}: {err}") from err

    def __call__(self, atoms: ase.Atoms) -> DFTResult:
        atoms = ase.Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        atoms.calc = self.make()
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = None
        if atoms.pbc.all():
            try:
                stress = atoms.get_stress(voigt=True)
            except NotImplementedError:  # PropertyNotImplementedError is one
                pass
        free = atoms.calc.results.get("free_energy")
        atoms.calc = None  # the result travels between processes; a calculator may not
        return DFTResult(atoms, float(energy), np.asarray(forces), stress,
                         None if free is None else float(free))


def label(structures: Sequence[ase.Atoms], oracle: Callable[[ase.Atoms], DFTResult],
          executor: Executor | None = None, workers: int | None = None,
          timeout_s: float | None = None, progress: bool = False
          ) -> Iterator[tuple[int, DFTResult]]:
    """Label every structure, one task each; yields (index, result) as tasks finish.

    ``executor``: any ``concurrent.futures`` executor (a Dask client's ``get_executor()``
    among them; Dask reschedules the tasks of a worker that dies). Default: each task in
    a process of its own, ``workers`` at a time, so a crash fails only its own task and a
    timeout kills its process. A task that raises, crashes or runs past ``timeout_s``
    (s; on an executor, from its submission) gives ``DFTResult(success=False)`` with the
    reason."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(structures), desc="label", unit="structure")
    own = executor is None
    if own:
        executor = ThreadPoolExecutor(workers or 1, thread_name_prefix="mlipstore-label")
        submit = partial(executor.submit, _in_own_process, oracle, timeout_s=timeout_s)
    else:
        submit = partial(executor.submit, oracle)
    pending: dict[Future, tuple[int, float]] = {
        submit(atoms): (i, time.monotonic()) for i, atoms in enumerate(structures)}
    try:
        while pending:
            wait_s = None if own else _next_deadline(pending, timeout_s)
            done, _ = wait(pending, timeout=wait_s, return_when=FIRST_COMPLETED)
            finished = [(future, pending.pop(future)[0]) for future in done]
            if not own and timeout_s is not None:
                now = time.monotonic()
                for future, (index, started) in list(pending.items()):
                    if now - started > timeout_s:
                        future.cancel()
                        del pending[future]
                        finished.append((None, index))
            for future, index in finished:
                if future is None:
                    result = _failed(structures[index], f"timed out after {timeout_s:g} s")
                else:
                    try:
                        result = future.result()
                    except Exception as err:  # the oracle's own failure is the task's
                        result = _failed(structures[index], f"{type(err).__name__}: {err}")
                if bar is not None:
                    bar.update()
                yield index, result
    finally:
        if bar is not None:
            bar.close()
        if own:
            executor.shutdown(wait=False, cancel_futures=True)


def _in_own_process(oracle: Callable[[ase.Atoms], DFTResult], atoms: ase.Atoms,
                    timeout_s: float | None) -> DFTResult:
    """``oracle(atoms)`` in a new process (started like ingest's workers): its death or a
    timeout (the process is killed) is a failed result, not a broken pool."""
    from .._workers import worker_context

    context = worker_context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(oracle, atoms, send), daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            return _failed(atoms, f"timed out after {timeout_s:g} s")
        try:
            return receive.recv()
        except EOFError:
            process.join()
            return _failed(atoms, f"the labelling process died (exit code "
                                  f"{process.exitcode})")
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receive.close()


def _child(oracle, atoms: ase.Atoms, send) -> None:
    try:
        result = oracle(atoms)
    except Exception as err:
        result = _failed(atoms, f"{type(err).__name__}: {err}")
    send.send(result)


def _next_deadline(pending: dict, timeout_s: float | None) -> float | None:
    if timeout_s is None:
        return None
    first = min(started for _, started in pending.values())
    return max(0.0, first + timeout_s - time.monotonic()) + 0.01


def _failed(atoms: ase.Atoms, reason: str) -> DFTResult:
    return DFTResult(atoms, success=False, error=reason)


def dask_executor(scheduler: str) -> Executor:
    """The ``concurrent.futures`` executor of a running Dask cluster: ``scheduler`` is its
    address (``tcp://host:8786``) or a scheduler file (JSON, as dask-jobqueue and
    ``dask scheduler --scheduler-file`` write)."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ConfigError("a Dask cluster needs dask.distributed: pip install "
                          "'mlipstore[dask]'") from err
    if Path(scheduler).is_file():
        client = Client(scheduler_file=scheduler)
    else:
        client = Client(scheduler)
    return client.get_executor(pure=False)


def write_dft_inputs(structures: Sequence[ase.Atoms], out: str | Path) -> list[Path]:
    """One folder per structure, ``out``/task_NNNN/, with the structure as POSCAR (VASP)
    and as extxyz (any code; its info keeps gamma, run, step). Run DFT in each, then
    ``mlipstore cycle out/task_*/vasprun.xml`` (or the code's outputs) adds them."""
    out = Path(out)
    folders = []
    for i, atoms in enumerate(structures):
        folder = out / f"task_{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        plain = ase.Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        with atomic_write(folder / "POSCAR") as fh:
            ase.io.write(fh, plain, format="vasp", direct=True, sort=False)
        with atomic_write(folder / "structure.extxyz") as fh:
            ase.io.write(fh, atoms, format="extxyz")
        folders.append(folder)
    return folders

"""params.yaml: the TrainingConfig and the settings of every pipeline stage, validated.

Unknown keys are errors, and every error names the key and the value, so a typo in
params.yaml never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from ase.data import chemical_symbols
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .layout import Layout
from .store.configuration import KeyMap
from .store.filters import ScanFilter, check_elements, criteria
from .store.method import Method

DEFAULT_PARAMS = Layout().params


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AceBasisConfig(_Strict):
    """The ACE B-basis; pacemaker's ``potential:`` section. Elements come from the data.

    ``nradmax_by_orders[k]`` / ``lmax_by_orders[k]`` limit the radial and angular
    functions of body order k+2 (k=0: pairs, which need lmax 0).
    """

    number_of_functions_per_element: PositiveInt = 300
    nradmax_by_orders: list[PositiveInt] = [15, 6, 4]
    lmax_by_orders: list[int] = [0, 3, 3]
    r_cut: PositiveFloat = 5.0  # Angstrom
    dcut: PositiveFloat = 0.01  # Angstrom, width of the cutoff smoothing
    radial_basis: Literal["SBessel", "ChebExpCos", "ChebPow"] = "SBessel"
    radparameters: list[float] = [5.25]
    ndensity: Literal[1, 2] = 1  # densities of the Finnis-Sinclair embedding

    @model_validator(mode="after")
    def _orders_match(self) -> AceBasisConfig:
        if len(self.nradmax_by_orders) != len(self.lmax_by_orders):
            raise ValueError(
                f"nradmax_by_orders {self.nradmax_by_orders} and lmax_by_orders "
                f"{self.lmax_by_orders} must list the same body orders")
        if self.lmax_by_orders[0] != 0 or min(self.lmax_by_orders) < 0:
            raise ValueError(f"lmax_by_orders {self.lmax_by_orders}: the pair order takes "
                             "lmax 0 and no lmax is negative")
        return self


class LossWeights(_Strict):
    """Relative weights of the loss terms; pacemaker's kappa = force / (energy + force),
    or ``kappa: auto``: pacemaker's choice from the spread of energies and forces of the
    training set (energy and force are then not used)."""

    energy: NonNegativeFloat = 0.5
    force: NonNegativeFloat = 0.5
    stress: float = 0.0
    kappa: Literal["auto"] | None = None

    @field_validator("stress")
    @classmethod
    def _no_stress(cls, value: float) -> float:
        if value != 0:
            raise ValueError(f"{value}: pacemaker's loss has no stress term, so stress can "
                             "only be 0 (stress is stored and exported, but not fitted)")
        return value

    @model_validator(mode="after")
    def _not_both_zero(self) -> LossWeights:
        if self.energy + self.force == 0:
            raise ValueError("energy and force weights are both 0: nothing to fit")
        return self

    @property
    def pacemaker_kappa(self) -> float | str:
        """pacemaker's ``fit.loss.kappa``."""
        return self.kappa or self.force / (self.energy + self.force)


class ZBLParams(_Strict):
    """ZBL reference. ``core_repulsion``: pacemaker's own (``repulsion: auto``), built into
    the .yace, with the inner cutoff from the shortest distance in the data; targets are
    not changed. ``delta``: ACE learns DFT - ZBL (LAMMPS ``pair_style zbl inner outer``)
    and the deployed model is ACE + the same ZBL."""

    mode: Literal["core_repulsion", "delta"] = "core_repulsion"
    inner_cutoff: NonNegativeFloat = 1.0  # Angstrom, delta mode
    outer_cutoff: PositiveFloat = 2.0  # Angstrom, delta mode: zero beyond

    @model_validator(mode="after")
    def _ordered(self) -> ZBLParams:
        if self.inner_cutoff >= self.outer_cutoff:
            raise ValueError(f"inner_cutoff {self.inner_cutoff} must be below outer_cutoff "
                             f"{self.outer_cutoff}")
        return self


class LJPair(_Strict):
    epsilon: NonNegativeFloat  # eV
    sigma: PositiveFloat  # Angstrom


class LJParams(_Strict):
    """Lennard-Jones reference (LAMMPS ``lj/cut`` with ``shift yes``): per-element epsilon
    and sigma mixed by Lorentz-Berthelot, unless a pair such as ``Al-Ti`` is given."""

    cutoff: PositiveFloat = 6.0  # Angstrom
    elements: dict[str, LJPair] = {}
    pairs: dict[str, LJPair] = {}

    @field_validator("elements")
    @classmethod
    def _known_elements(cls, value: dict) -> dict:
        unknown = [s for s in value if s not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"unknown element(s) {unknown}")
        return value

    @field_validator("pairs")
    @classmethod
    def _pair_names(cls, value: dict) -> dict:
        for name in value:
            a, _, b = name.partition("-")
            if a not in chemical_symbols[1:] or b not in chemical_symbols[1:]:
                raise ValueError(f"pair {name!r} is not of the form Al-Ti")
        return value


class EnergyBasedWeighting(_Strict):
    """pacemaker's ``EnergyBasedWeightingPolicy``: structures within ``DElow`` (eV/atom)
    of the reference energy (``energy``: convex hull or cohesive) get the fraction ``wlow``
    of the energy weight; above ``DEup`` (eV/atom) or with a force component above
    ``DFup`` (eV/Å) they are left out. Weights go as 1/(dE + DE)^2 and 1/(|F|^2 + DF)."""

    DElow: NonNegativeFloat = 1.0  # eV/atom
    DEup: PositiveFloat = 10.0  # eV/atom
    DFup: PositiveFloat | None = None  # eV/Angstrom
    DE: PositiveFloat = 1.0  # eV/atom
    DF: PositiveFloat = 1.0  # (eV/Angstrom)^2
    wlow: float | None = Field(0.75, gt=0.0, lt=1.0)
    energy: Literal["convex_hull", "cohesive"] = "convex_hull"
    reftype: Literal["all", "bulk", "cluster"] = "all"


class Weighting(_Strict):
    """How structures weigh in the loss: a pacemaker policy, times a factor per store tag.

    ``source``: the weights the data came with (pacemaker ``w_energy``/``w_forces``, GRACE
    ``energy_weight``/``force_weight``), their mean for configurations without; where no training
    configuration has any, pacemaker's uniform policy. ``uniform`` and ``energy_based``
    ignore the sources' weights. ``by_tag`` becomes pacemaker's per-structure ``w_factor``
    column, which multiplies the weights (a structure with several listed tags takes the
    product of their factors; others take 1)."""

    policy: Literal["source", "uniform", "energy_based"] = "source"
    energy_based: EnergyBasedWeighting = EnergyBasedWeighting()
    by_tag: dict[str, PositiveFloat] = {}


class GpuConfig(_Strict):
    """pacemaker's ``backend.gpu_config`` (tensorpot): which GPU (-1: none, CPU only) and
    its memory limit in MB (0: no limit)."""

    gpu_ind: int = Field(0, ge=-1)
    mem_limit: int = Field(0, ge=0)  # MB


class TrainingConfig(_Strict):
    """Everything that defines a fit; every potential records the TrainingConfig it had.

    reference_potential: ``none``; ``ZBL`` (see ``zbl.mode``); ``LJ``, a Lennard-Jones
    baseline subtracted from the targets and added back at deployment (see ``lj``).
    initial_potential: ``previous`` starts from the coefficients of the newest generation
    trained on other data (a warm start; a larger basis grows from it); ``none`` from
    scratch; or the path of a pacemaker ``.yaml`` potential. Where each key goes in
    pacemaker's input.yaml: ``PacemakerRunner.generate_input_yaml``.
    """

    ace_basis_config: AceBasisConfig = AceBasisConfig()
    reference_potential: Literal["none", "ZBL", "LJ"] = "none"
    initial_potential: str = "previous"
    max_epochs: PositiveInt = 300  # pacemaker fit.maxiter
    fit_cycles: PositiveInt = 1
    # ladder (hierarchical) fitting: functions added per step (int), or a fraction of the
    # current basis (0 < x < 1), or both as [int, fraction]; null: fit the whole basis
    ladder_step: PositiveInt | float | list[float] | None = None
    ladder_type: Literal["body_order", "power_order"] = "body_order"
    # random noise added to the coefficients between fit cycles
    noise_relative_sigma: NonNegativeFloat | None = None
    noise_absolute_sigma: NonNegativeFloat | None = None
    # early stopping: relative loss decrease per iteration below which the fit stops
    min_relative_train_loss_per_iter: PositiveFloat | None = None
    min_relative_test_loss_per_iter: PositiveFloat | None = None
    early_stopping_patience: PositiveInt = 200  # iterations
    batch_size: PositiveInt = 100  # pacemaker backend.batch_size
    # tensorpot, on running out of memory: divide the batch by the factor and go on
    batch_size_reduction: bool = True
    batch_size_reduction_factor: float = Field(2.0, gt=1.0)
    gpu_config: GpuConfig | None = None
    loss_weights: LossWeights = LossWeights()
    l1_coeff: NonNegativeFloat = 1e-8
    l2_coeff: NonNegativeFloat = 1e-8
    # smoothness of the radial functions: weights of their 0th, 1st, 2nd derivatives
    w0_rad: NonNegativeFloat = 0.0
    w1_rad: NonNegativeFloat = 0.0
    w2_rad: NonNegativeFloat = 0.0
    weighting: Weighting = Weighting()
    optimizer: Literal["BFGS", "L-BFGS-B"] = "BFGS"
    evaluator: Literal["pyace", "tensorpot"] = "tensorpot"
    seed: int = 42
    zbl: ZBLParams = ZBLParams()
    lj: LJParams = LJParams()
    # any other pacemaker input.yaml key, merged in last; keys mlipstore sets are refused
    pacemaker_extra: dict[str, Any] = {}

    @model_validator(mode="after")
    def _lj_has_parameters(self) -> TrainingConfig:
        if self.reference_potential == "LJ" and not self.lj.elements:
            raise ValueError("reference_potential LJ needs lj.elements: epsilon (eV) and "
                             "sigma (Angstrom) for every element")
        return self

    @field_validator("ladder_step")
    @classmethod
    def _ladder_step(cls, value):
        parts = value if isinstance(value, list) else [] if value is None else [value]
        ok = len(parts) <= 2 and all(
            (float(p).is_integer() and p >= 1) or 0 < p < 1 for p in parts)
        if not ok:
            raise ValueError(f"{value}: an integer >= 1 (functions per step), a fraction "
                             "0 < x < 1 of the current basis, or [integer, fraction]")
        return value

    @field_validator("initial_potential")
    @classmethod
    def _initial_potential(cls, value: str) -> str:
        if value not in ("previous", "none") and not value.endswith((".yaml", ".yml")):
            raise ValueError(f"{value!r}: 'previous', 'none' or the path of a pacemaker "
                             ".yaml potential")
        return value

    @model_validator(mode="after")
    def _extra_keys_are_free(self) -> TrainingConfig:
        from .training.pacemaker import check_extra

        check_extra(self)
        return self

    def baseline(self):
        """The pair potential subtracted from the targets (None if nothing is)."""
        from .training.reference import ZBL, LennardJones

        if self.reference_potential == "ZBL" and self.zbl.mode == "delta":
            return ZBL(self.zbl.inner_cutoff, self.zbl.outer_cutoff)
        if self.reference_potential == "LJ":
            return LennardJones(self.lj.cutoff, self.lj.model_dump()["elements"],
                                self.lj.model_dump()["pairs"])
        return None

    @field_validator("reference_potential", mode="before")
    @classmethod
    def _canonical_case(cls, value):
        if isinstance(value, str):
            return {"none": "none", "zbl": "ZBL", "lj": "LJ"}.get(value.lower(), value)
        return value


class IngestParams(_Strict):
    """The ingest stage: new files of the inbox (``data/raw``) go into the store
    (``data/store``); the paths are dvc.yaml's (``layout.Layout``), not settings."""

    # glob (matched against the path inside the inbox) -> --key-map text
    key_maps: dict[str, str] = {}
    tags: list[str] = []
    # glob -> the DFT method of matching files that do not state it (extxyz, DataFrames):
    # --method text or a mapping, e.g. {code: VASP, xc: PBE, cutoff_eV: 520}
    methods: dict[str, str | dict[str, str | float]] = {}

    @field_validator("key_maps", "methods")
    @classmethod
    def _parses(cls, value, info: ValidationInfo):
        parse = KeyMap.parse if info.field_name == "key_maps" else Method.parse
        for text in value.values():
            parse(text)
        return value


def _filter_keys() -> dict[str, Any]:
    """params.yaml's filter keys, made from ScanFilter's fields (one definition)."""
    keys = {}
    for field, kind in criteria():
        value_type = {list: list[str]}.get(kind, kind)
        constraint = {"gt": 0} if field.metadata["positive"] else {}
        keys[field.name] = (value_type | None, Field(None, description=field.metadata["help"],
                                                     **constraint))
    return keys


class _FilterBase(_Strict):
    @field_validator("elements", check_fields=False)
    @classmethod
    def known_elements(cls, value):
        return check_elements(value)

    def scan_filter(self) -> ScanFilter:
        """The ScanFilter these keys describe."""
        return ScanFilter(**self.model_dump(include=set(FilterParams.model_fields)))


FilterParams = create_model(
    "FilterParams", __base__=_FilterBase, __module__=__name__, **_filter_keys(),
    __doc__="Which configurations of the store: the fields of ``ScanFilter``, each "
            "optional.")


class ExportParams(FilterParams):
    """The export stage: which configurations, and the fit targets.

    A source's own ``energy_corrected`` is the target unless ``rereference``; the others
    are energy minus ``reference_energies``: ``auto`` (the sources' own references where
    some targets are theirs, else fitted to the training pool by least squares), a mapping
    (eV), or ``none`` (zero). Targets made with different references are refused unless
    ``allow_mixed_references`` (see ``targets``). Configurations of different DFT
    methods (fingerprints) are refused unless ``methods: allow_mixed``; choose one with
    ``method_fingerprints``.
    """

    reference_energies: Literal["auto", "none"] | dict[str, float] = "auto"
    rereference: bool = False
    allow_mixed_references: bool = False
    methods: Literal["single", "allow_mixed"] = "single"

    @field_validator("reference_energies")
    @classmethod
    def _known_elements(cls, value):
        unknown = [s for s in (value if isinstance(value, dict) else [])
                   if s not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"unknown element(s) {unknown} (symbols such as Al, Ti)")
        return value


class SplitParams(_Strict):
    """The test split: a configuration's side depends only on its id and the seed."""

    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 42


class SelectParams(_Strict):
    """The select stage: which structures of the pool are trained on."""

    method: Literal["maxvol", "random", "none"] = "maxvol"
    n_structures: PositiveInt = 1000
    seed: int = 42
    # maxvol without a fitted potential: an unfitted basis with the TrainingConfig's
    # cutoff and radial functions, these limits, and as many functions per element as the
    # pool allows (below the atom count of the rarest element, at most max_basis_functions)
    max_basis_functions: PositiveInt = 1000
    # maxvol on a big pool: pace_select -b, structures per batch (memory ~ batch, not pool)
    batch_size: PositiveInt | None = None
    basis_nradmax_by_orders: list[PositiveInt] = [15, 6, 4, 3]
    basis_lmax_by_orders: list[int] = [0, 3, 3, 2]

    def selection_basis(self, training_basis: AceBasisConfig) -> AceBasisConfig:
        """The basis maxvol selects with, before any potential is fitted."""
        return AceBasisConfig.model_validate({
            **training_basis.model_dump(),
            "nradmax_by_orders": self.basis_nradmax_by_orders,
            "lmax_by_orders": self.basis_lmax_by_orders,
        })


class ExploreParams(_Strict):
    """Exploration (``mlipstore explore``, the loop's first step): molecular dynamics with a
    generation's potential, watching its extrapolation grade gamma.

    ``trajectories`` independent runs start from structures of the store chosen by
    ``start`` (at random, by ``seed``) and cycle through the temperatures (and, for
    ``npt``, the pressures). Frames whose largest atomic gamma lies in
    (``gamma_lower``, ``gamma_upper``] are collected, at most one per
    ``collect_every_steps``; a run stops at gamma above ``gamma_upper``, a non-finite
    energy or force, two atoms closer than ``min_distance_A``, or a temperature above
    ``max_temperature_factor`` times its target. The collected frames are thinned
    D-optimally against the active set to at most ``max_candidates``."""

    ensemble: Literal["langevin", "nvt", "npt"] = "langevin"
    temperatures_K: list[PositiveFloat] = [300.0, 1000.0]
    pressures_GPa: list[float] = [0.0]  # npt only
    steps: PositiveInt = 1000
    timestep_fs: PositiveFloat = 1.0
    trajectories: PositiveInt = 4
    friction_per_fs: PositiveFloat = 0.01  # langevin
    damping_fs: PositiveFloat = 100.0  # nvt/npt thermostat (and npt barostat: 10 times it)
    gamma_lower: PositiveFloat = 2.0
    gamma_upper: PositiveFloat = 10.0
    collect_every_steps: PositiveInt = 10
    max_candidates: PositiveInt = 20
    min_distance_A: PositiveFloat = 0.6
    max_temperature_factor: PositiveFloat = 5.0
    seed: int = 0
    # MD from a structure far from equilibrium heats up until the temperature check
    # stops it: by default the starts have no force above 5 eV/Å
    start: FilterParams = FilterParams(max_force=5.0)

    @model_validator(mode="after")
    def _ordered(self) -> ExploreParams:
        if self.gamma_upper <= self.gamma_lower:
            raise ValueError(f"gamma_upper ({self.gamma_upper}) must exceed gamma_lower "
                             f"({self.gamma_lower})")
        return self


class LoopParams(_Strict):
    """The active-learning loop (``mlipstore loop``): explore -> label -> train.

    ``oracle``: ``module:factory`` of an ASE calculator that labels the candidates (e.g.
    ``ase.calculators.emt:EMT``), called with ``oracle_kwargs``; or ``external``: the
    candidates are written as DFT input folders and the loop stops until their results
    come back through ``mlipstore cycle``. ``dask_scheduler``: the address (or scheduler
    file) of a Dask cluster to label on; without it, ``workers`` local processes.
    ``holdout``: a labelled file (any format mlipstore reads) each generation is tested
    on. The loop stops early when exploration finds no candidate or every trajectory
    ran ``target_stable_time_ps``."""

    generations: PositiveInt = 3
    oracle: str = "external"
    oracle_kwargs: dict[str, Any] = {}
    dask_scheduler: str | None = None
    workers: PositiveInt | None = None
    label_timeout_s: PositiveFloat | None = None
    holdout: str | None = None
    target_stable_time_ps: PositiveFloat | None = None

    @field_validator("oracle")
    @classmethod
    def _oracle_form(cls, value: str) -> str:
        if value != "external" and value.count(":") != 1:
            raise ValueError(f"{value!r} is neither 'external' nor 'module:factory'")
        return value


class Params(_Strict):
    """The whole params.yaml."""

    ingest: IngestParams = IngestParams()
    export: ExportParams = ExportParams()
    split: SplitParams = SplitParams()
    select: SelectParams = SelectParams()
    training: TrainingConfig = TrainingConfig()
    explore: ExploreParams = ExploreParams()
    loop: LoopParams = LoopParams()


def _describe(err: ValidationError, data: dict, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        value = data
        for part in e["loc"]:
            value = value.get(part) if isinstance(value, dict) else None
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a setting mlipstore knows; check the spelling)"
        shown = f" = {value!r}" if not isinstance(value, dict) or not value else ""
        lines.append(f"{source}: {key or '(top level)'}{shown}: {msg}")
    return "\n".join(lines)


def with_overrides(model: _Strict, overrides: dict[str, Any], source: str = "options"
                   ) -> _Strict:
    """``model`` with the ``overrides`` that are not None, validated again; ConfigError
    naming each bad key (``source`` says where they came from, e.g. the command line)."""
    data = {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(model).model_validate({**model.model_dump(), **data})
    except ValidationError as err:
        raise ConfigError(_describe(err, data, source)) from err


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; raise ConfigError naming each bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, data, str(path))) from err

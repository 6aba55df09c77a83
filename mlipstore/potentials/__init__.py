"""Potentials: the registry of generations (``registry``: ``Potential``, each with its
lineage, the deployed model with its baseline, LAMMPS lines) and ``screening``
(extrapolation grades of candidate structures against a potential's active set)."""

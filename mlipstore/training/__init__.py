"""Training: from the store to a fitted potential.

``split`` (test set by content id), ``targets`` (fit targets and reference energies),
``reference`` (baselines for delta learning: ZBL, LJ), ``export`` (pacemaker's DataFrame),
``trainers`` (files for GRACE, MACE, NequIP, Allegro), ``selection`` (training ids:
maxvol via pace_select, random), ``pacemaker`` (``PacemakerRunner``: input.yaml, the fit,
the active set) and ``metrics`` (errors and pictures). Never imports ``potentials`` or
``pipeline``.
"""

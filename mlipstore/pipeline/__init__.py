"""The pipeline and the active-learning loop, over everything below.

``training_data`` (``TrainingData``: inbox -> store -> pacemaker files -> training ids),
``stages`` (the dvc.yaml stages), ``cycle`` (``TrainingCycle``: DFT results in, the next
generation out), ``explore`` (MD watching the extrapolation grade), ``oracle`` (labels
from ASE calculators or external DFT) and ``loop`` (``ActiveLearningLoop``).
"""

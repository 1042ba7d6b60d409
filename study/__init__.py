"""The hyperparameter-study platform: search spaces -> Ray Tune + Optuna -> stored records -> reports.

``python study/run.py --space mixup.yaml`` runs a study; ``python study/report.py results/<study>``
rebuilds its reports. The trainer it drives is ``model.train.train``; ``model`` never imports this package.
"""

from study.space import Param, Resources, Space, SpaceError, load_space

__all__ = ["Param", "Resources", "Space", "SpaceError", "load_space"]

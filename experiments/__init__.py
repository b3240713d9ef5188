"""Experiment sweeps over train.py: `python -m experiments.run --config experiments/<study>.yaml` (see run.py)."""

"""The DDP check can fail: a run under `--trainer.strategy=ddp` (no search for unused parameters) with a planted
layer that no loss reads stops at the next forward with DDP's reducer error, and `check_ddp_gradients`, which the real
2-process runs of test_cli.py and test_update.py pass, names the parameter."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT
from tests.recording import check_ddp_gradients
from tests.test_cli import OFFLINE
from tests.test_resume import command, small_catalogue  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_a_parameter_no_loss_reads_stops_ddp_and_the_gradient_check_names_it(small_catalogue, tmp_path):  # noqa: F811
    args = command(small_catalogue, tmp_path / "run", 6, "--trainer.devices=2", "--trainer.strategy=ddp",
                   "--trainer.callbacks+=tests.recording.GradientLog",
                   "--trainer.callbacks+=tests.recording.UnusedParameter")
    env = {**OFFLINE, "MUPPET_GRADIENT_LOG": str(tmp_path / "grads"), "MUPPET_UNUSED_PARAMETER": "1"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                            start_new_session=True, check=False)
    assert result.returncode != 0
    # torch's reducer error ("Expected to have finished reduction in the prior iteration ...") as Lightning words it
    assert "parameters that were not used in producing the loss" in result.stderr, result.stderr[-3000:]
    with pytest.raises(AssertionError, match=r"step 0: no gradient for \['unused_probe.weight', 'unused_probe.bias'\]"):
        check_ddp_gradients(str(tmp_path / "grads"))

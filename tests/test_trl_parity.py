"""The chat data's answer-only loss is TRL's: per example, on the tiny model, to 1e-5 (trl: a test-only anchor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_in

CHECK = Path(__file__).with_name("trl_parity_check.py")


@pytest.mark.slow
def test_masked_loss_matches_trl_sft_trainer(render, tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="trl is in requirements-dev.txt: run make setup")
    project = render(task="causal-lm")
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    result = run_in(project, str(CHECK), package, str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(losses) == {"prompt-completion", "conversational"}
    for name, pairs in losses.items():
        assert len(pairs) == 12, name
        for ours, theirs in pairs:
            assert ours == pytest.approx(theirs, abs=1e-5), name
    # the conversational rows with two assistant turns count both, the prompt-completion rows only the last
    assert any(abs(a[0] - b[0]) > 1e-4 for a, b in zip(losses["conversational"], losses["prompt-completion"],
                                                       strict=True))


DPO_CHECK = Path(__file__).with_name("dpo_parity_check.py")


@pytest.mark.slow
def test_dpo_loss_and_rewards_match_trl_dpo_trainer(render, tmp_path: Path) -> None:
    """Per pair, on 12 pairs: loss, rewards/chosen and rewards/rejected equal trl.DPOTrainer's to 1e-5, in the
    standard and the conversational format, with a frozen copy and with the adapters switched off as reference."""
    pytest.importorskip("trl", reason="trl is in requirements-dev.txt: run make setup")
    project = render(task="causal-lm")
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    result = run_in(project, str(DPO_CHECK), package, str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    cases = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(cases) == {"standard/copy", "standard/adapters", "conversational/copy", "conversational/adapters"}
    for name, (ours, theirs) in cases.items():
        assert len(ours) == len(theirs) == 12, name
        for mine, trl in zip(ours, theirs, strict=True):
            assert mine == pytest.approx(trl, abs=1e-5), name
        assert any(abs(rewards) > 1e-3 for _, *pair in ours for rewards in pair), name  # the policy has moved


@pytest.mark.slow
def test_answer_tokens_weigh_the_same_over_the_step_and_ranks_as_in_trl(render, tmp_path: Path) -> None:
    """2 gloo ranks x 2 accumulated micro-batches: our step's gradient is TRL's with num_items_in_batch (to 1e-5);
    a mean per micro-batch would not be."""
    pytest.importorskip("trl", reason="trl is in requirements-dev.txt: run make setup")
    project = render(task="causal-lm")
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    result = run_in(project, str(CHECK), package, str(tmp_path), "step", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])
    assert differences["ours_vs_trl"] < 1e-5
    assert differences["per_batch_mean_vs_trl"] > 100 * max(differences["ours_vs_trl"], 1e-7)

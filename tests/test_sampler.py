"""The multi-task batch sampler: mixture, mixing, token budget, rank sharding, exact resume."""

from collections import Counter

import numpy as np
import pytest

from core.errors import UserError
from datamodules.sampler import MultiTaskBatchSampler, target_proportions


def lengths_of(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(5, 120, size=n) for n in sizes]


def task_of(sampler, index):
    return int(np.searchsorted(sampler.offsets, index, side="right") - 1)


def realized(sampler, epochs=1):
    counts = Counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts.update(task_of(sampler, i) for batch in sampler for i in batch)
    total = sum(counts.values())
    return np.array([counts[t] / total for t in range(len(sampler.sizes))])


@pytest.mark.parametrize("strategy", ["proportional", "temperature", "uniform"])
def test_empirical_mixture_matches_strategy(strategy):
    sizes = [5000, 1000, 200]
    sampler = MultiTaskBatchSampler(lengths_of(sizes), strategy=strategy, temperature=2.0, batch_size=32)
    expected = target_proportions(sizes, strategy, 2.0)
    assert np.allclose(realized(sampler, epochs=2), expected, atol=0.01)
    assert not np.allclose(target_proportions(sizes, "proportional"), target_proportions(sizes, "uniform"), atol=0.1)


def test_caps_limit_a_task_per_epoch():
    sampler = MultiTaskBatchSampler(lengths_of([5000, 500]), caps=[500, None], batch_size=50)
    assert np.allclose(realized(sampler), [0.5, 0.5], atol=0.01)


def test_small_task_is_reused_not_exhausted():
    sizes = [10_000, 10]
    sampler = MultiTaskBatchSampler(lengths_of(sizes), strategy="uniform", batch_size=64)
    seen = [i for batch in sampler for i in batch if task_of(sampler, i) == 1]
    assert len(seen) > 100 * sizes[1] * 0.9  # about 5000 draws of 10 examples
    assert set(seen) == set(range(sampler.offsets[1], sampler.offsets[1] + 10))


def test_mixed_batches_hold_several_tasks_and_homogeneous_hold_one():
    sizes = [2000] * 6
    mixed = MultiTaskBatchSampler(lengths_of(sizes), batch_size=32, group_by_length=False)
    per_batch = [len({task_of(mixed, i) for i in b}) for b in mixed]
    assert np.mean(per_batch) > 4
    homogeneous = MultiTaskBatchSampler(lengths_of(sizes), batch_size=32, homogeneous=True)
    assert all(len({task_of(homogeneous, i) for i in b}) == 1 for b in homogeneous)
    assert len({task_of(homogeneous, b[0]) for b in homogeneous}) == 6


def test_token_budget_counts_every_row_and_groups_lengths():
    lengths = lengths_of([3000, 3000])
    rows = [np.ones(3000, dtype=int), np.full(3000, 4)]  # task 1: 4 choices per example
    budget = 2048
    grouped = MultiTaskBatchSampler([l * r for l, r in zip(lengths, rows)], rows, max_tokens=budget)
    flat_rows, flat_len = np.concatenate(rows), np.concatenate(lengths)
    for batch in grouped:
        cost = flat_rows[batch].sum() * flat_len[batch].max()
        assert cost <= budget or len(batch) == 1
    random = MultiTaskBatchSampler([l * r for l, r in zip(lengths, rows)], rows, max_tokens=budget,
                                   group_by_length=False)

    def real_fraction(sampler):
        real = sum(int((flat_len[b] * flat_rows[b]).sum()) for b in sampler)
        padded = sum(int(flat_rows[b].sum() * flat_len[b].max()) for b in sampler)
        return real / padded
    assert real_fraction(grouped) > 0.9 > real_fraction(random)


def test_ranks_get_disjoint_examples_and_equal_batch_counts_with_100x_imbalance():
    sizes = [20_000, 200]
    lengths = lengths_of(sizes)
    ranks = [MultiTaskBatchSampler(lengths, max_tokens=1024, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        batches = [list(s) for s in ranks]
        assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == len(ranks[1]) > 0
        seen = [{i for b in rank_batches for i in b} for rank_batches in batches]
        assert not seen[0] & seen[1]
        assert all(any(task_of(ranks[0], i) == 1 for i in s) for s in seen)  # the small task reaches both ranks


def test_same_seed_and_epoch_give_the_same_plan_and_epochs_differ():
    lengths = lengths_of([500, 300])
    a, b = MultiTaskBatchSampler(lengths, seed=7), MultiTaskBatchSampler(lengths, seed=7)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_resume_yields_exactly_the_remaining_batches():
    lengths = lengths_of([800, 300, 50])
    full = MultiTaskBatchSampler(lengths, strategy="temperature", max_tokens=512, seed=11)
    full.set_epoch(2)
    everything = list(full)
    resumed = MultiTaskBatchSampler(lengths, strategy="temperature", max_tokens=512, seed=11)
    resumed.set_epoch(2)
    resumed.resume_from(epoch=2, batches_done=5)
    assert list(resumed) == everything[5:]
    assert list(resumed) == everything  # the skip applies once; the next pass is the whole epoch again


def test_fixed_size_batches_without_grouping_leave_at_most_one_short_batch():
    sampler = MultiTaskBatchSampler(lengths_of([2000] * 6), batch_size=162, group_by_length=False, pool_size=4096)
    sizes = Counter(len(b) for b in sampler)
    assert sizes == Counter({162: 74, 12: 1})


def test_evaluation_ranks_step_equally_often_and_fillers_are_marked():
    from datamodules.collate import PaddingBatch
    from datamodules.eval_sampler import EvalBatchSampler
    groups = [0, 0, 1, 2, 2, 2, 3, 4, 5]  # 6 examples over 9 rows (span windows)
    ranks = [EvalBatchSampler(len(groups), 2, groups, num_replicas=4, rank=r) for r in range(4)]
    assert {len(s) for s in ranks} == {1}  # 2, 2, 1, 1 examples: one batch each
    ranks = [EvalBatchSampler(len(groups), 1, groups, num_replicas=4, rank=r) for r in range(4)]
    assert [len(s) for s in ranks] == [2, 2, 2, 2]
    real = [[row for b in s if not isinstance(b, PaddingBatch) for row in b] for s in ranks]
    assert sorted(row for rows in real for row in rows) == list(range(len(groups)))  # each row once, on one rank
    assert [sum(isinstance(b, PaddingBatch) for b in s) for s in ranks] == [0, 0, 1, 1]
    assert ranks[3].batches[-1] == ranks[3].batches[0]  # a filler repeats the rank's own first batch


@pytest.mark.parametrize("batching", ["mixed", "task_per_batch"])
@pytest.mark.parametrize("max_tokens", [None, 700])
def test_proportional_without_caps_sees_every_example_once_per_epoch_over_ranks(batching, max_tokens):
    sizes = [3001, 17, 250]
    lengths = lengths_of(sizes, seed=4)
    ranks = [MultiTaskBatchSampler(lengths, batch_size=16, max_tokens=max_tokens, batching=batching,
                                   num_replicas=3, rank=r, seed=2) for r in range(3)]
    plans = []
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        batches = [list(s) for s in ranks]
        assert len({len(b) for b in batches}) == 1 and all(len(s) == len(batches[0]) for s in ranks)
        seen = sorted(i for rank_batches in batches for b in rank_batches for i in b)
        assert seen == list(range(sum(sizes)))  # every example exactly once, across ranks
        plans.append(batches[0])
    assert plans[0] != plans[1]


def test_task_per_batch_and_task_per_update_schemes():
    sizes = [900, 400, 300, 200]
    lengths = lengths_of(sizes)
    per_batch = [MultiTaskBatchSampler(lengths, max_tokens=1024, batching="task_per_batch", num_replicas=2, rank=r)
                 for r in (0, 1)]
    batches = [list(s) for s in per_batch]
    assert all(len({task_of(per_batch[0], i) for i in b}) == 1 for rank in batches for b in rank)
    updates = [{task_of(per_batch[0], b[0]) for b in pair} for pair in zip(*batches)]
    assert np.mean([len(u) for u in updates]) > 1.5  # the update (both ranks) mixes tasks

    accumulate = 3
    per_update = [MultiTaskBatchSampler(lengths, max_tokens=1024, batching="task_per_update", num_replicas=2,
                                        rank=r, accumulate=accumulate) for r in (0, 1)]
    batches = [list(s) for s in per_update]
    assert len(batches[0]) == len(batches[1]) and len(batches[0]) % accumulate == 0
    for step in range(0, len(batches[0]), accumulate):  # every micro-batch of every rank in one update: one task
        tasks = {task_of(per_update[0], i) for rank in batches for b in rank[step:step + accumulate] for i in b}
        assert len(tasks) == 1
    assert len({task_of(per_update[0], b[0]) for b in batches[0]}) == 4


def test_atomic_checkpoint_write_keeps_the_previous_file_when_killed_mid_write(tmp_path):
    import torch

    from lightning_modules.checkpoint_io import AtomicCheckpointIO

    class DiesWhilePickled:
        def __reduce__(self):
            raise KeyboardInterrupt("killed during the write")

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(1000), "bad": DiesWhilePickled()}, path)
    assert torch.load(path, weights_only=False)["step"] == 1  # the earlier checkpoint is intact and loads
    assert [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"] == ["last.ckpt.partial"]
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=False)["step"] == 3


def test_no_examples_or_too_few_for_the_ranks_are_user_errors_naming_the_cause():
    with pytest.raises(UserError, match="no training examples in any selected task"):
        MultiTaskBatchSampler([np.array([], dtype=np.int64)], batch_size=4)
    sampler = MultiTaskBatchSampler([np.array([7])], batch_size=4, num_replicas=2, rank=0, seed=0)
    with pytest.raises(UserError, match=r"1 training example\(s\) cannot fill 2 batch\(es\).*too few training"):
        list(sampler)

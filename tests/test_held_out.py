"""The held-out validation split (flashvideo.data.splits) and its loss (flashvideo.training.held_out): which clips,
how many, and a mean that counts every sample once on any number of processes."""

import os

import datasets
import pytest
import torch
from accelerate import Accelerator, debug_launcher
from accelerate.state import AcceleratorState

from flashvideo.data.splits import held_out_count, held_out_split
from flashvideo.training.held_out import held_out_loss


def test_held_out_split_is_disjoint_seeded_and_bounded():
    clips = datasets.Dataset.from_dict({"clip": list(range(100))})
    train, held_out = held_out_split(clips, percentage=10, max_rows=256, seed=3)
    train_clips, held_clips = list(train["clip"]), list(held_out["clip"])
    assert len(held_clips) == 10 and len(train_clips) == 90
    assert sorted(train_clips + held_clips) == list(range(100))
    assert train_clips == sorted(train_clips) and held_clips == sorted(held_clips)  # in their original order
    assert list(held_out_split(clips, 10, 256, seed=3)[1]["clip"]) == held_clips  # the seed fixes it
    assert list(held_out_split(clips, 10, 256, seed=4)[1]["clip"]) != held_clips
    assert len(held_out_split(clips, 10, max_rows=4, seed=3)[1]) == 4
    # Nothing to hold out: the very same data set (its fingerprint, and the cached maps after it, unchanged).
    same, none = held_out_split(clips, percentage=0.5, max_rows=256, seed=3)
    assert same is clips and none is None
    assert held_out_count(16, 5, 256) == 0 and held_out_count(20, 5, 256) == 1 and held_out_count(2, 99, None) == 1
    with pytest.raises(ValueError, match="percentage"):
        held_out_count(10, 101, None)


class _Mean(torch.nn.Module):
    """A model whose 'loss' on a batch of numbers is their mean times a weight: per sample, the number itself."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, values):
        return self.weight * values


def _loss(model, batch):
    return model(batch).mean(), {}


def _collate(rows):
    return torch.tensor([row["value"] for row in rows], dtype=torch.float32)


VALUES = [1.0, 2.0, 4.0, 8.0, 16.0]  # 5 samples: 3 on process 0, 2 on process 1


def _two_process_worker(result_dir):
    torch.set_num_threads(1)
    rank = torch.distributed.get_rank()
    os.environ["LOCAL_RANK"] = str(rank)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(_Mean())
    loss = held_out_loss(accelerator, model, datasets.Dataset.from_dict({"value": VALUES}), _loss, _collate, 2)
    torch.save(loss, os.path.join(result_dir, f"rank{rank}.pt"))


def test_held_out_loss_counts_every_sample_once_on_any_number_of_processes(tmp_path):
    AcceleratorState._reset_state(reset_partial_state=True)
    dataset = datasets.Dataset.from_dict({"value": VALUES})
    accelerator = Accelerator(cpu=True)
    model = _Mean().train()
    for batch_size in (1, 2, 5):
        assert held_out_loss(accelerator, model, dataset, _loss, _collate, batch_size) == pytest.approx(6.2)
    assert model.training  # given back in training mode
    AcceleratorState._reset_state(reset_partial_state=True)
    debug_launcher(_two_process_worker, args=(str(tmp_path),), num_processes=2)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)] == [pytest.approx(6.2)] * 2


def test_checkpoints_saved_before_the_split_existed_resume_with_none_held_out():
    from flashvideo.training.arguments import first_identity_difference, parse_args, run_identity

    current = run_identity(*parse_args(["--stage", "keyframe"]))
    older = {k: v for k, v in current.items() if k not in ("validation_split_percentage", "max_eval_samples")}
    # The older run held no clip out: resuming it with the default 5% would change its training set.
    assert first_identity_difference(older, current) == (
        "--validation_split_percentage: 0.0 in the checkpoint, 5.0 now"
    )
    none_held_out = run_identity(*parse_args(["--stage", "keyframe", "--validation_split_percentage", "0"]))
    assert first_identity_difference(older, none_held_out) is None

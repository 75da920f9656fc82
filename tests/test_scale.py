"""Real-size data (issue 33): gates stream batches with the same numbers as whole-set passes,
memory that does not grow with the eval set beyond its images and compact masks, batches sized by
pixels, masks read without their images, and exact fast forms of the per-batch reductions."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from segcheck import perturb
from segcheck.data import BATCH_PIXELS, DatasetSpec, EvalData, batch_for, compact_masks, mask_dtype, stack
from segcheck.model import ModelUnderTest, all_finite, channel_argmax
from segcheck.scoring import energy, entropy, logit_statistics, max_logit, msp
from segcheck.target import Target
from tests.test_datasets import make_folder, write_config

# --- the same numbers, a batch at a time ---------------------------------------------------------


def test_noise_and_corruptions_drawn_per_batch_are_the_whole_draw():
    images = np.random.default_rng(0).integers(0, 256, (7, 9, 11, 3), dtype=np.uint8)  # odd sizes on purpose
    whole, parts = np.random.default_rng(5), np.random.default_rng(5)
    for kind in perturb.NOISE_KINDS:
        expected = perturb.noise_pixels(kind, images.shape, (0.5,) * 3, (0.2,) * 3, whole, data_mean=(0.3,) * 3,
                                        data_std=(0.1,) * 3)  # fmt: skip
        got = perturb.noise_batches(kind, images.shape, (0.5,) * 3, (0.2,) * 3, parts, 3, data_mean=(0.3,) * 3,
                                    data_std=(0.1,) * 3)  # fmt: skip
        assert np.array_equal(np.concatenate(list(got)), expected), kind
    for name in perturb.CORRUPTIONS:
        for severity in (0, 1, 3, 5):
            batched = np.concatenate(list(perturb.corrupted_batches(name, images, severity, 4, batch=2)))
            assert np.array_equal(batched, perturb.corrupt(name, images, severity, 4)), (name, severity)


def test_channel_statistics_are_the_numbers_of_the_whole_array():
    images = np.random.default_rng(1).integers(0, 256, (13, 17, 19, 3), dtype=np.uint8)
    pixels = images.reshape(-1, 3) / 255.0
    stats = perturb.channel_statistics(images, batch=4)
    assert np.array_equal(stats["data_mean"], pixels.mean(0)) and np.array_equal(stats["data_std"], pixels.std(0))


def test_masks_are_kept_in_the_smallest_type_and_no_label_wraps():
    assert mask_dtype(0, 255) == np.uint8 and mask_dtype(0, 256) == np.uint16 and mask_dtype(-1, 3) == np.int32
    assert compact_masks(np.array([[0, 255]], np.int64)).dtype == np.uint8
    spec = DatasetSpec(("a", "b"))
    data = [(np.zeros((2, 2, 3), np.uint8), np.array([[0, 1], [255, 1]])),
            (np.zeros((2, 2, 3), np.uint8), np.array([[300, 1], [0, 1]]))]  # fmt: skip
    data = type("Split", (list,), {"spec": spec})(data)
    _, masks = stack(data, [0, 1])
    assert masks.dtype == np.uint16 and masks[1, 0, 0] == 300  # widened, not wrapped to 44
    with pytest.raises(Exception, match="outside 0..1"):
        EvalData(np.zeros((2, 2, 2, 3), np.uint8), masks, spec).score(np.zeros((2, 2, 2), np.uint8))


def test_batches_are_sized_by_pixels():
    assert batch_for((64, 128), 8, BATCH_PIXELS) == 8  # small scenes keep their batch
    assert batch_for((1024, 2048), 8, BATCH_PIXELS) == 2  # full-size images two at a time
    assert batch_for((4096, 4096), 8, BATCH_PIXELS) == 1  # never fewer than one
    big = type("Big", (list,), {"spec": DatasetSpec(("a", "b")), "identity": "big"})(
        [(np.zeros((1024, 1024, 3), np.uint8), np.zeros((1024, 1024), np.int64))] * 3
    )
    data = EvalData.from_dataset({"val": big}, "val", 3, 0, batch_size=8)
    assert data.batch_size == 4 and data.backward_batch == 1 and data.chunk == 3
    assert [(s.start, s.stop) for s in data.batches()] == [(0, 3)]


# --- memory: what grows with the eval set -------------------------------------------------------------


class Null(torch.nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return self.conv(x)


def _target(n: int, size=(96, 128)) -> Target:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (n, *size))
    data = EvalData(images, masks, DatasetSpec(("a", "b", "c")), batch_size=2)
    torch.manual_seed(0)
    return Target(ModelUnderTest(Null()), data)


@pytest.mark.parametrize(
    "gate, cfg",
    [
        ("noise_input", {"max_miou": 0.1, "max_ratio": 0.7, "seed": 0}),
        ("shift_equivariance", {"shift_px": 8, "min_agreement": 0.9, "seed": 0}),
        ("derangement_gap", {"min_gap": 0.1, "seed": 0}),
        ("prediction_collapse", {"min_class_fraction": 0.5, "max_dominance_excess": 0.2}),
        ("input_normalization", {"max_abs_mean": 1.0, "min_std": 0.25, "max_std": 4.0}),
        ("calibration", {"max_ece": 0.05, "bins": 15}),
        ("error_analysis", {"worst_images": 4, "dilation_ratio": 0.02}),
        ("corruption_robustness", {"severity": 0, "min_agreement": 0.9, "max_miou_drop": 0.05, "seed": 0}),
    ],
)
def test_a_gates_own_arrays_do_not_grow_with_the_eval_set(gate, cfg):
    """What numpy allocates while the gate runs, beyond the clean forward pass: 16 images may need
    at most twice the pixels of 4 more than 4 images do (a whole-set float copy would be 12x)."""
    import segcheck.gates as gates

    peaks = {}
    for n in (4, 16):
        target = _target(n)
        _ = target.predictions  # the shared pass, outside the measurement
        tracemalloc.start()
        getattr(gates, gate)(target, cfg)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_image = 96 * 128 * 4  # its uint8 image and mask
    assert peaks[16] - peaks[4] <= 2 * 12 * per_image, peaks


def test_perturbation_stability_does_not_copy_the_eval_set():
    from segcheck.gates import perturbation_stability

    peaks = {}
    for n in (4, 16):
        target = _target(n)
        _ = target.predictions
        tracemalloc.start()
        perturbation_stability(target, {"severity": 0, "min_agreement": 0.9, "max_miou_drop": 0.05, "seed": 0},
                               "gaussian_noise")  # fmt: skip
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[16] - peaks[4] <= 2 * 12 * 96 * 128 * 4, peaks


# --- masks without their images ---------------------------------------------------------------------


def test_a_folder_mask_is_read_without_decoding_its_image(tmp_path, monkeypatch):
    from segcheck_plugins import folder

    make_folder(tmp_path, stems=("a", "b"))
    write_config(tmp_path)
    dataset = folder.FolderDataset(tmp_path, "val")
    expected = [dataset[i][1] for i in range(len(dataset))]
    monkeypatch.setattr(folder, "read_image", lambda path: pytest.fail("the image was decoded"))
    assert all(np.array_equal(dataset.mask(i), m) for i, m in enumerate(expected))
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(Exception, match=r"images/b.png is 8x12 but its mask .*masks/b.png is 5x5"):
        dataset.mask(1)


def test_label_integrity_and_the_prior_read_masks_only(tmp_path, monkeypatch):
    from segcheck.gates import label_integrity
    from segcheck.layout import training_prior
    from segcheck_plugins import folder

    for split in ("train", "val"):
        make_folder(tmp_path / split, stems=("a", "b", "c"), seed=len(split))
    write_config(tmp_path)
    splits = lambda split: folder.FolderDataset(tmp_path, split)  # noqa: E731
    target = Target(ModelUnderTest(Null()), EvalData.from_dataset(splits, "val", 3, 0))
    monkeypatch.setattr(folder, "read_image", lambda path: pytest.fail("an image was decoded"))
    assert label_integrity(target).passed
    prior, used = training_prior(target, 8, 0)
    assert used == 3 and prior.shape == (8, 12)


# --- exact fast reductions -----------------------------------------------------------------------------


def test_all_finite_and_channel_argmax_agree_with_torch_on_any_layout():
    x = torch.randn(2, 5, 6, 7)
    x[..., ::2] = x[..., ::2].round()  # ties
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        assert torch.equal(channel_argmax(t), t.argmax(1)) and all_finite(t)
        for bad in (float("nan"), float("inf"), -float("inf")):
            broken = t.clone()
            broken[1, 3, 2, 2] = bad
            assert not all_finite(broken)
            assert torch.equal(channel_argmax(broken), broken.argmax(1))


def test_the_shared_logit_statistics_match_torchs_kernels():
    logits = torch.randn(3, 13, 40, 60).contiguous(memory_format=torch.channels_last) * 4
    log_p = logits.log_softmax(1)
    assert torch.allclose(msp(logits), -logits.softmax(1).amax(1), atol=1e-6)
    assert torch.equal(max_logit(logits), -logits.amax(1))
    assert torch.allclose(energy(logits), -torch.logsumexp(logits, 1), atol=1e-5)
    assert torch.allclose(entropy(logits), -(log_p.exp() * log_p).sum(1), atol=1e-5)
    first = logit_statistics(logits)
    assert logit_statistics(logits) is first  # computed once for the batch
    logits.add_(1.0)  # changed in place: computed again
    assert logit_statistics(logits) is not first


def test_components_share_the_ground_truth_labelling_and_give_the_same_numbers():
    from segcheck.metrics.components import ComponentMetrics

    rng = np.random.default_rng(3)
    is_ood = rng.random((2, 40, 50)) < 0.1
    valid = rng.random((2, 40, 50)) < 0.95
    scores = rng.random((2, 40, 50)).astype(np.float32)
    shared = [ComponentMetrics(0.7, min_gt_size=2, min_pred_size=3) for _ in range(2)]
    for metric in shared:
        metric.update(scores, is_ood, valid)
    alone = ComponentMetrics(0.7, min_gt_size=2, min_pred_size=3).update(scores, is_ood.copy(), valid.copy())
    assert shared[0].compute() == shared[1].compute() == alone.compute()

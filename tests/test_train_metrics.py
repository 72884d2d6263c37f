"""Metrics against hand-computed values, their edge cases, losses and the flip/rot90 augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4seg.train.augment import (apply_dihedral, apply_jitter, augment_batch, dihedral, random_dihedral,
                                   random_jitter)
from llm4seg.train.losses import BCEDiceLoss, CEDiceLoss
from llm4seg.train.metrics import confusion_counts, evaluate_labels, hd95, scores


def test_scores_match_hand_computed_values():
    pred = np.array([[1, 1, 0], [0, 0, 0]])
    truth = np.array([[1, 0, 0], [1, 0, 0]])
    counts = confusion_counts(pred, truth)
    assert counts.tolist() == [[[1, 1, 1, 3]]]  # TP, FP, FN, TN
    s = {k: float(v[0, 0]) for k, v in scores(counts).items()}
    assert s["iou"] == pytest.approx(1 / 3)
    assert s["dice"] == pytest.approx(0.5)
    assert s["sensitivity"] == pytest.approx(0.5)
    assert s["precision"] == pytest.approx(0.5)
    assert s["specificity"] == pytest.approx(0.75)
    assert s["accuracy"] == pytest.approx(4 / 6)


def test_edge_cases_are_defined():
    empty = np.zeros((4, 4), int)
    some = empty.copy()
    some[1, 1] = 1
    both = evaluate_labels(empty, empty)
    assert both["iou"] == both["dice"] == both["sensitivity"] == both["precision"] == 1.0
    assert both["hd95"] == 0.0 and both["hd95_undefined"] == 0
    missed = evaluate_labels(empty, some)     # object not found
    assert missed["iou"] == missed["dice"] == missed["sensitivity"] == 0.0
    assert missed["precision"] == 0.0 and np.isnan(missed["hd95"]) and missed["hd95_undefined"] == 1
    spurious = evaluate_labels(some, empty)   # nothing there, something predicted
    assert spurious["iou"] == spurious["sensitivity"] == spurious["precision"] == 0.0
    assert spurious["specificity"] == pytest.approx(15 / 16)


def test_per_image_mean_differs_from_pooled_as_documented():
    # image A: a 1-pixel object found exactly; image B: a 9-pixel object missed
    a_t = np.zeros((5, 5), int)
    a_t[0, 0] = 1
    b_t = np.zeros((5, 5), int)
    b_t[1:4, 1:4] = 1
    m = evaluate_labels(np.stack([a_t, np.zeros_like(b_t)]), np.stack([a_t, b_t]), hd=False)
    assert m["n"] == 2
    assert m["iou"] == pytest.approx(0.5)           # (1 + 0) / 2
    assert m["iou_pooled"] == pytest.approx(0.1)    # TP 1 / (TP 1 + FN 9)
    assert m["dice_pooled"] == pytest.approx(2 / 11)


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing=(1.0, 1.0)) -> float:
    from scipy import ndimage

    def boundary(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, border_value=0)) * np.asarray(spacing)

    pa, pb = boundary(a), boundary(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


def test_hd95_single_pixels_and_spacing():
    a = np.zeros((5, 8), bool)
    b = np.zeros((5, 8), bool)
    a[2, 1], b[2, 4] = True, True
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(2.0, 0.5)) == pytest.approx(1.5)


def test_hd95_matches_brute_force():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:40, :40]
    a = (yy - 20) ** 2 + (xx - 18) ** 2 < 100
    b = ((yy - 22) ** 2 / 1.5 + (xx - 21) ** 2 < 90) | (rng.random((40, 40)) > 0.995)
    for spacing in ((1.0, 1.0), (0.7, 1.6)):
        assert hd95(a, b, spacing) == pytest.approx(_brute_hd95(a, b, spacing))


def test_multiclass_metrics_per_class_and_mean():
    truth = np.array([[1, 1, 2, 2], [0, 0, 2, 2]])
    pred = np.array([[1, 0, 2, 2], [0, 0, 2, 0]])
    m = evaluate_labels(pred, truth, num_classes=2, class_names=["bg", "a", "b"])
    assert m["per_class"]["a"]["iou"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["iou"] == pytest.approx(0.75)
    assert m["iou"] == pytest.approx(0.625)
    assert m["per_class"]["b"]["dice"] == pytest.approx(6 / 7)
    assert set(m["per_class"]["a"]) >= {"iou", "dice", "sensitivity", "precision", "specificity", "accuracy",
                                        "hd95", "iou_pooled", "hd95_pooled"}


def test_losses_small_for_perfect_predictions_and_differentiable():
    t = torch.zeros(2, 8, 8, dtype=torch.long)
    t[:, 2:6, 2:6] = 1
    good = (t.float() * 40 - 20).unsqueeze(1)
    assert BCEDiceLoss()(good, t) < 1e-3
    assert BCEDiceLoss()(-good, t) > 1.0
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    t3 = torch.randint(0, 3, (2, 8, 8))
    loss = CEDiceLoss()(logits, t3)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    perfect = torch.nn.functional.one_hot(t3, 3).permute(0, 3, 1, 2).float() * 40
    assert CEDiceLoss()(perfect, t3) < 1e-3


def test_dihedral_group_has_eight_distinct_shape_keeping_elements():
    x = torch.arange(16.0).view(1, 4, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    # flips are among them
    assert any(torch.equal(o, torch.flip(x, (-1,))) for o in outs)
    assert any(torch.equal(o, torch.flip(x, (-2,))) for o in outs)


def test_batch_augmentation_applies_the_same_symmetry_to_images_and_labels():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(6, 2, 8, 8)
    labels = (imgs[:, 0] > 0).long()
    ks = random_dihedral(6, True, g)
    ai, al = augment_batch(imgs, labels, ks)
    for i, k in enumerate(ks.tolist()):
        assert torch.equal(ai[i], dihedral(imgs[i], k))
        assert torch.equal(al, (ai[:, 0] > 0).long())


def test_non_square_batches_keep_their_shape():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 4, 6)
    ks = random_dihedral(16, False, g)
    assert set(ks.tolist()) <= {0, 2, 5, 7}
    assert apply_dihedral(x, ks).shape == x.shape
    assert torch.equal(dihedral(x, 5), torch.flip(x, (-1,)))
    assert torch.equal(dihedral(x, 7), torch.flip(x, (-2,)))


def test_jitter_of_strength_zero_is_the_identity():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 3, 16, 16) - 0.5) / 0.25  # normalised [0, 1] intensities (mean 0.5, sd 0.25)
    y = (torch.rand(3, 16, 16) > 0.5).long()
    jx, jy = apply_jitter(x, y, random_jitter(x.shape, 0.0, g), 0.5, 0.25)
    assert torch.allclose(jx, x, atol=1e-5)
    assert torch.equal(jy, y)


def test_jitter_moves_images_and_labels_together_and_keeps_the_intensity_range():
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disk = ((yy - 12) ** 2 + (xx - 18) ** 2 < 36).float()
    x = ((disk * 0.8 + 0.1)[None, None].repeat(8, 3, 1, 1) - 0.5) / 0.25
    y = disk.long()[None].repeat(8, 1, 1)
    jitter = random_jitter(x.shape, 1.0, g)
    jx, jy = apply_jitter(x, y, jitter, 0.5, 0.25)
    assert jx.shape == x.shape and jy.shape == y.shape and jy.dtype == y.dtype
    assert set(jy.unique().tolist()) <= {0, 1}
    assert not torch.equal(jy, y)  # the disk moved
    assert float(jx.min()) >= -2 - 1e-5 and float(jx.max()) <= 2 + 1e-5  # still within [0, 1] before normalising
    for i in range(8):  # the moved label still marks the bright disk: inside brighter than outside
        inside, outside = jx[i][:, jy[i] == 1].mean(), jx[i][:, jy[i] == 0].mean()
        assert inside > outside + 1.0
    gray = random_jitter((4, 1, 8, 8), 1.0, torch.Generator().manual_seed(2))
    assert torch.equal(gray.gain, torch.ones(4, 1))  # no colour gains on one channel

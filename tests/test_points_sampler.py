"""``MultiPointSampler``: RITM's training clicks, drawn from a ``np.random.Generator``."""
from __future__ import annotations

import random
from typing import Dict, List

import numpy as np
import pytest

from isegm.data.points_sampler import MultiPointSampler, click_count_probs
from isegm.data.sample import ObjectNode, TrainingSample

N = 24
SIZE = 40
A = (slice(4, 16), slice(4, 16))      # object 1: 12 x 12
B = (slice(24, 36), slice(20, 36))    # object 2: 12 x 16
C = (slice(4, 12), slice(26, 34))     # object 3: 8 x 8
IGNORED = (slice(38, 40), slice(None))


def region_mask(*regions) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    for region in regions:
        mask[region] = True
    return mask


def objects_sample(num_objects: int = 2, ignore: bool = True) -> TrainingSample:
    """Up to three rectangles A, B, C (labels 1, 2, 3) and, with ``ignore``, ignored rows 38-39."""
    layers = np.zeros((SIZE, SIZE), np.int32)
    for value, region in enumerate([A, B, C][:num_objects], start=1):
        layers[region] = value
    if ignore:
        layers[IGNORED] = 9
    return TrainingSample(np.zeros((SIZE, SIZE, 3), np.uint8), layers, objects_ids=list(range(1, num_objects + 1)),
                          ignore_ids=[9] if ignore else None)


def split(points: np.ndarray) -> Dict[str, np.ndarray]:
    """The real (non-padding) positive and negative clicks, as int rows (y, x, index)."""
    pos, neg = points[:N], points[N:]
    return {"pos": pos[pos[:, 0] >= 0].astype(int), "neg": neg[neg[:, 0] >= 0].astype(int)}


def inside(clicks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return mask[clicks[:, 0], clicks[:, 1]]


def skipclick_sampler(**kwargs) -> MultiPointSampler:
    options = dict(max_num_points=N, prob_gamma=0.80, merge_objects_prob=0.15, max_num_merged_objects=2)
    options.update(kwargs)
    return MultiPointSampler(**options)


def test_same_seed_same_draw_whatever_the_global_random_state():
    sampler, sample = skipclick_sampler(), objects_sample(3)
    random.seed(1)
    np.random.seed(1)
    first = sampler.sample(sample, np.random.default_rng(7))
    random.seed(2)
    np.random.seed(2)
    second = sampler.sample(sample, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    others = [sampler.sample(sample, np.random.default_rng(seed))[1] for seed in range(8, 12)]
    assert any(not np.array_equal(first[1], points) for points in others)


def test_layout_positives_first_and_padding_at_the_tail_of_each_half():
    sampler, sample = skipclick_sampler(first_click_center=True), objects_sample(3)
    for seed in range(30):
        mask, points = sampler.sample(sample, np.random.default_rng(seed))
        assert mask.dtype == np.float32 and mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {-1.0, 0.0, 1.0}
        assert points.dtype == np.float32 and points.shape == (2 * N, 3)
        for half in (points[:N], points[N:]):
            padding = (half == -1).all(axis=1)
            num_real = int((~padding).sum())
            assert not padding[:num_real].any() and padding[num_real:].all()   # padding only at the end
            real = half[:num_real]
            assert set(real[:, 2].tolist()) <= {0.0, 100.0}
            assert ((real[:, :2] >= 0) & (real[:, :2] < SIZE)).all()
        assert (~(points[:N] == -1).all(axis=1)).sum() >= 1   # an object always gets a positive click


def test_positives_in_the_target_negatives_outside_it_and_off_ignored_pixels():
    sampler, sample = skipclick_sampler(merge_objects_prob=0.0), objects_sample(2)
    for seed in range(40):
        mask, points = sampler.sample(sample, np.random.default_rng(seed))
        target = mask == 1
        assert np.array_equal(target, region_mask(A)) or np.array_equal(target, region_mask(B))
        assert (mask[IGNORED] == -1).all()
        clicks = split(points)
        assert inside(clicks["pos"], target).all()
        assert (mask[clicks["neg"][:, 0], clicks["neg"][:, 1]] == 0).all()   # neither target nor ignored


def test_positives_come_from_the_eroded_mask_unless_too_little_is_left():
    sampler = skipclick_sampler(positive_erode_prob=1.0, positive_erode_iters=3)
    big = objects_sample(1, ignore=False)                        # 12 x 12: eroded to 6 x 6
    for seed in range(20):
        clicks = split(sampler.sample(big, np.random.default_rng(seed))[1])["pos"]
        assert ((clicks[:, :2] >= 7) & (clicks[:, :2] < 13)).all()
    layers = np.zeros((SIZE, SIZE), np.int32)
    layers[10:14, 10:14] = 1                                     # 4 x 4: erosion leaves nothing
    small = TrainingSample(np.zeros((SIZE, SIZE, 3), np.uint8), layers, objects_ids=[1])
    seen = np.zeros((SIZE, SIZE), bool)
    for seed in range(20):
        clicks = split(sampler.sample(small, np.random.default_rng(seed))[1])["pos"]
        assert inside(clicks, layers == 1).all()
        seen[clicks[:, 0], clicks[:, 1]] = True
    assert seen[10, 10] and seen.sum() > 8   # the whole 4 x 4 square, edges included


def test_first_click_center_puts_the_first_positive_inside():
    sampler = skipclick_sampler(first_click_center=True, positive_erode_prob=0.0, merge_objects_prob=0.0)
    sample = objects_sample(1, ignore=False)
    for seed in range(30):
        pos = split(sampler.sample(sample, np.random.default_rng(seed))[1])["pos"]
        y, x, index = pos[0]
        # Distance to the background of A (rows / cols 4..15) above max / 1.7 = 6 / 1.7: at least 4.
        assert index == 0 and min(y - 3, 16 - y, x - 3, 16 - x) >= 4
        assert (pos[1:, 2] == 100).all()


def test_merged_objects_give_the_union_and_each_one_a_click():
    sampler = skipclick_sampler(merge_objects_prob=1.0, max_num_merged_objects=2)
    sample = objects_sample(3)
    rects = [region_mask(r) for r in (A, B, C)]
    for seed in range(30):
        mask, points = sampler.sample(sample, np.random.default_rng(seed))
        covered = [bool((mask[r] == 1).all()) for r in rects]
        assert sum(covered) == 2
        assert np.array_equal(mask == 1, np.logical_or.reduce([r for r, c in zip(rects, covered) if c]))
        pos = split(points)["pos"]
        assert all(inside(pos, r).any() for r, c in zip(rects, covered) if c)

    unlimited = skipclick_sampler(merge_objects_prob=1.0, max_num_merged_objects=-1)
    sizes = {int((unlimited.sample(sample, np.random.default_rng(seed))[0] == 1).sum()) for seed in range(40)}
    assert 144 + 192 + 64 in sizes and len(sizes) > 1   # three objects, and also pairs


def test_only_one_first_click_may_leave_a_merged_object_unclicked():
    sample = objects_sample(2)

    def both_clicked(sampler: MultiPointSampler) -> float:
        hits = []
        for seed in range(60):
            pos = split(sampler.sample(sample, np.random.default_rng(seed))[1])["pos"]
            hits.append(inside(pos, region_mask(A)).any() and inside(pos, region_mask(B)).any())
        return float(np.mean(hits))

    assert both_clicked(skipclick_sampler(merge_objects_prob=1.0)) == 1.0
    assert both_clicked(skipclick_sampler(merge_objects_prob=1.0, only_one_first_click=True)) < 0.8


def test_frequencies_follow_the_probabilities():
    sampler = skipclick_sampler()   # SkipClick's settings: merge 0.15, gamma 0.8
    sample = objects_sample(2)
    counts: Dict[str, List[float]] = {"pos": [], "neg": [], "merged": [], "is_a": []}
    neg_in = {"other": 0.0, "border": 0.0}
    expected = {"other": 0.0, "border": 0.0}
    for seed in range(500):
        mask, points = sampler.sample(sample, np.random.default_rng(seed))
        merged = bool((mask == 1).sum() == 144 + 192)
        counts["merged"].append(merged)
        if merged:
            continue
        is_a = bool(mask[A].all())
        target, other = (region_mask(A), region_mask(B)) if is_a else (region_mask(B), region_mask(A))
        band = region_mask((slice(2, 18), slice(2, 18)) if is_a else (slice(22, 38), slice(18, 38))) & ~target
        outside = (mask == 0).sum()
        clicks = split(points)
        counts["pos"].append(len(clicks["pos"]))
        counts["neg"].append(len(clicks["neg"]))
        counts["is_a"].append(is_a)
        neg_in["other"] += inside(clicks["neg"], other).sum()
        neg_in["border"] += inside(clicks["neg"], band).sum()
        # Each negative: 'other' with 0.4, 'border' (radius ceil(0.1 sqrt(area)) = 2) with 0.5, and
        # 'anywhere outside' with 0.1, which may land there too.
        expected["other"] += len(clicks["neg"]) * (0.4 + 0.1 * other.sum() / outside)
        expected["border"] += len(clicks["neg"]) * (0.5 + 0.1 * band.sum() / outside)

    assert 0.09 < np.mean(counts["merged"]) < 0.21
    assert 0.4 < np.mean(counts["is_a"]) < 0.6
    probs = click_count_probs(N, 0.8)
    mean_positives = 1 + (np.arange(N) * probs).sum()
    mean_negatives = (np.arange(N + 1) * click_count_probs(N + 1, 0.8)).sum()
    assert abs(np.mean(counts["pos"]) - mean_positives) < 0.6
    assert abs(np.mean(counts["neg"]) - mean_negatives) < 0.6
    assert abs(np.mean(np.array(counts["pos"]) == 1) - probs[0]) < 0.06
    total = sum(counts["neg"])
    for strategy in ("other", "border"):
        assert abs(neg_in[strategy] - expected[strategy]) / total < 0.05, strategy


@pytest.mark.parametrize("strategy", ["bg", "other", "border"])
def test_each_negative_strategy_alone(strategy: str):
    probs = {f"negative_{s}_prob": float(s == strategy) for s in ("bg", "other", "border")}
    sampler = skipclick_sampler(merge_objects_prob=0.0, **probs)
    sample = objects_sample(2)
    for seed in range(20):
        mask, points = sampler.sample(sample, np.random.default_rng(seed))
        neg = split(points)["neg"]
        is_a = bool(mask[A].all())
        other = region_mask(B if is_a else A)
        if strategy == "other":
            assert inside(neg, other).all()
        elif strategy == "border":   # Chebyshev distance 1..2 from the rectangle
            band = region_mask((slice(2, 18), slice(2, 18)) if is_a else (slice(22, 38), slice(18, 38)))
            assert inside(neg, band & (mask == 0)).all()
        else:
            assert (mask[neg[:, 0], neg[:, 1]] == 0).all()
    # Without any other object, 'other' falls back to anywhere outside the target.
    alone = skipclick_sampler(negative_bg_prob=0.0, negative_other_prob=1.0, negative_border_prob=0.0)
    negatives = sum(len(split(alone.sample(objects_sample(1), np.random.default_rng(s))[1])["neg"]) for s in range(10))
    assert negatives > 0


def test_sample_without_objects_gives_an_empty_mask_and_background_negatives():
    sample = objects_sample(0)
    sampler = skipclick_sampler()
    total = 0
    for seed in range(20):
        mask, points = sampler.sample(sample, np.random.default_rng(seed))
        assert mask.shape == (SIZE, SIZE) and not mask.any()
        assert (points[:N] == -1).all()
        neg = split(points)["neg"]
        assert not inside(neg, region_mask(IGNORED)).any()
        total += len(neg)
    assert total > 0


def hierarchy_sample() -> TrainingSample:
    """A parent (rows / cols 4-35) with a part C (10-25) and a tiny part T (30-32, 9 px < 10 %)."""
    layers = np.zeros((SIZE, SIZE, 2), np.int32)
    layers[4:36, 4:36, 0] = 1
    layers[10:26, 10:26, 1] = 1
    layers[30:33, 30:33, 1] = 2
    objects = {0: ObjectNode(0, 1, children=[1, 2]), 1: ObjectNode(1, 1, parent=0), 2: ObjectNode(1, 2, parent=0)}
    return TrainingSample(np.zeros((SIZE, SIZE, 3), np.uint8), layers, objects=objects)


def test_hierarchy_picks_parts_and_cuts_them_out():
    sampler = MultiPointSampler(N, prob_gamma=0.8, positive_erode_prob=0.0, use_hierarchy=True)
    parent = region_mask((slice(4, 36), slice(4, 36)))
    part = region_mask((slice(10, 26), slice(10, 26)))
    tiny = region_mask((slice(30, 33), slice(30, 33)))
    seen = {"parent": 0, "parent without part": 0, "part": 0, "tiny": 0}
    for seed in range(120):
        mask, points = sampler.sample(hierarchy_sample(), np.random.default_rng(seed))
        clicks, target = split(points), mask == 1
        if np.array_equal(target, part) or np.array_equal(target, tiny):
            seen["part" if target[part].all() else "tiny"] += 1
            assert inside(clicks["neg"], parent & ~target).any()   # the parent around it is a required negative
        else:
            assert target[tiny].all() or not target[tiny].any()
            assert not inside(clicks["pos"], tiny).any()           # tiny parts never get a positive click
            if target[part].any():
                seen["parent"] += 1
            else:
                seen["parent without part"] += 1
                assert inside(clicks["neg"], part).any() and not inside(clicks["pos"], part).any()
        assert inside(clicks["pos"], target).all()
    assert all(count > 5 for count in seen.values()), seen


def test_invalid_negative_probabilities():
    with pytest.raises(ValueError, match="must be 1"):
        MultiPointSampler(N, negative_bg_prob=0.5, negative_other_prob=0.5, negative_border_prob=0.5)

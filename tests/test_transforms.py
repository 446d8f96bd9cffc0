"""Training augmentation: geometry moves image and masks together, colour touches the image only."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from isegm.data.sample import TrainingSample
from isegm.data.augmentation import (Compose, HorizontalFlip, PadIfNeeded, RandomBrightnessContrast, RandomCrop,
                                   RGBShift, UniformRandomResize, resize_nearest, training_augmentation,
                                   validation_augmentation)


def marked(height: int = 30, width: int = 40, layers: int = 2):
    """An image and int32 layers that both encode each pixel's position (row * width + col),
    so that any geometric change can be read back from either."""
    codes = np.arange(height * width).reshape(height, width)
    image = np.stack([codes // 256, codes % 256, np.full_like(codes, 7)], axis=2).astype(np.uint8)
    masks = np.repeat((codes + 1)[:, :, None], layers, axis=2).astype(np.int32)
    return image, masks


def decode(image: np.ndarray) -> np.ndarray:
    return image[:, :, 0].astype(np.int32) * 256 + image[:, :, 1]


def test_horizontal_flip_mirrors_image_and_masks_with_probability_p():
    image, masks = marked()
    flipped_image, flipped_masks = HorizontalFlip(p=1.0)(image, masks, np.random.default_rng(0))
    assert np.array_equal(flipped_image[5, 39], image[5, 0]) and np.array_equal(flipped_masks[5, 39], masks[5, 0])
    assert np.array_equal(flipped_masks[:, :, 0], decode(flipped_image) + 1)
    assert flipped_image.flags.c_contiguous and flipped_masks.dtype == np.int32
    same = HorizontalFlip(p=0.0)(image, masks, np.random.default_rng(0))
    assert same[0] is image and same[1] is masks
    flips = [HorizontalFlip()(image, masks, np.random.default_rng(s))[1][0, 0, 0] != masks[0, 0, 0] for s in range(400)]
    assert 0.42 < np.mean(flips) < 0.58


def test_pad_if_needed_centres_with_zeros_smaller_half_first():
    image, masks = marked(5, 7)
    padded_image, padded_masks = PadIfNeeded(10, 10)(image, masks, np.random.default_rng(0))
    assert padded_image.shape == (10, 10, 3) and padded_masks.shape == (10, 10, 2)
    assert padded_image.dtype == np.uint8 and padded_masks.dtype == np.int32
    # 5 rows of padding: 2 on top, 3 below; 3 columns: 1 left, 2 right.
    assert np.array_equal(padded_image[2:7, 1:8], image) and np.array_equal(padded_masks[2:7, 1:8], masks)
    border = np.ones((10, 10), bool)
    border[2:7, 1:8] = False
    assert not padded_image[border].any() and not padded_masks[border].any()
    big = marked(12, 12)
    assert PadIfNeeded(10, 10)(*big, np.random.default_rng(0))[0] is big[0]


def test_random_crop_takes_the_same_window_everywhere():
    image, masks = marked(30, 40)
    tops, lefts = set(), set()
    for seed in range(200):
        crop_image, crop_masks = RandomCrop(20, 25)(image, masks, np.random.default_rng(seed))
        assert crop_image.shape == (20, 25, 3) and crop_masks.shape == (20, 25, 2)
        codes = decode(crop_image)
        top, left = divmod(int(codes[0, 0]), 40)
        # albumentations' get_random_crop_coords (since 1.1): int((H - h + 1) * u), u then v.
        u, v = np.random.default_rng(seed).random(2)
        assert (top, left) == (int((30 - 20 + 1) * u), int((40 - 25 + 1) * v))
        assert np.array_equal(codes, decode(image)[top:top + 20, left:left + 25])
        assert np.array_equal(crop_masks[:, :, 1], codes + 1)
        tops.add(top)
        lefts.add(left)
    # Every offset 0 ... H - h, the last one included, and none beyond.
    assert tops == set(range(30 - 20 + 1)) and lefts == set(range(40 - 25 + 1))
    assert RandomCrop(30, 40)(image, masks, np.random.default_rng(0))[0] is not image   # a copy, not a view
    with pytest.raises(ValueError, match="larger than"):
        RandomCrop(31, 40)(image, masks, np.random.default_rng(0))


def test_random_crop_of_albumentations_before_1_1_never_takes_the_last_offset():
    """EMC-Click's authors pin albumentations 0.5.1: int((H - h) * u)."""
    image, masks = marked(30, 40)
    tops, lefts = set(), set()
    for seed in range(200):
        top, left = divmod(int(decode(RandomCrop(20, 25, last_offset=False)(image, masks,
                                                                         np.random.default_rng(seed))[0])[0, 0]), 40)
        u, v = np.random.default_rng(seed).random(2)
        assert (top, left) == (int((30 - 20) * u), int((40 - 25) * v))
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(30 - 20)) and lefts == set(range(40 - 25))


def test_uniform_random_resize_scales_image_bilinear_and_masks_nearest():
    image, masks = marked(30, 40, layers=600)   # more layers than cv2.resize takes
    sizes = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scale = np.random.default_rng(seed).uniform(0.75, 1.40)
        out_image, out_masks = UniformRandomResize((0.75, 1.40))(image, masks, rng)
        height, width = round(30 * scale), round(40 * scale)
        assert out_image.shape == (height, width, 3) and out_masks.shape == (height, width, 600)
        assert out_masks.dtype == np.int32 and out_image.dtype == np.uint8
        assert np.array_equal(out_image, cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
        assert np.array_equal(out_masks[:, :, :2], cv2.resize(masks[:, :, :2], (width, height),
                                                               interpolation=cv2.INTER_NEAREST))
        assert set(np.unique(out_masks)) <= set(np.unique(masks))   # labels stay labels
        # Nearest neighbour: the mask at (i, j) is the source pixel around (i * 30 / height, j * 40 / width).
        rows, cols = np.divmod(out_masks[:, :, 0] - 1, 40)
        assert np.abs(rows - np.arange(height)[:, None] * 30 / height).max() <= 1
        assert np.abs(cols - np.arange(width)[None, :] * 40 / width).max() <= 1
        sizes.add(height)
    assert min(sizes) <= 24 and max(sizes) >= 39


def test_resize_nearest_is_opencvs_nearest():
    rng = np.random.default_rng(0)
    for height, width in [(17, 23), (480, 640), (333, 517)]:
        masks = rng.integers(0, 100, (height, width, 3)).astype(np.int32)
        for scale in (0.75, 0.8, 1.0, 1.13, 1.4):
            size = round(height * scale), round(width * scale)
            expected = cv2.resize(masks, size[::-1], interpolation=cv2.INTER_NEAREST)
            assert np.array_equal(resize_nearest(masks, *size), expected)


def test_brightness_contrast_uses_albumentations_uint8_table():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    masks = np.ones((16, 16, 1), np.int32)
    # alpha = 1.2, beta = 0.1: pixel * 1.2 + 25.5, clipped, truncated.
    transform = RandomBrightnessContrast(brightness_limit=(0.1, 0.1), contrast_limit=(0.2, 0.2), p=1.0)
    out_image, out_masks = transform(image, masks, np.random.default_rng(0))
    levels = out_image[:, :, 0].ravel()
    assert out_masks is masks and out_image.dtype == np.uint8
    assert levels[0] == 25 and levels[100] == 145 and levels[190] == 253 and levels[200] == 255
    assert np.array_equal(out_image[:, :, 0], out_image[:, :, 2])
    half = RandomBrightnessContrast(brightness_limit=(0.5, 0.5), contrast_limit=(0.0, 0.0), p=1.0)
    assert half(image, masks, np.random.default_rng(0))[0][0, 0, 0] == 127   # 0.5 * 255, truncated
    by_mean = RandomBrightnessContrast(brightness_limit=(0.1, 0.1), contrast_limit=(0.2, 0.2),
                                       brightness_by_max=False, p=1.0)
    assert by_mean(image, masks, np.random.default_rng(0))[0][0, 0, 0] == 15   # alpha * beta * mean = 15.3
    assert RandomBrightnessContrast(p=0.0)(image, masks, np.random.default_rng(0))[0] is image
    applied = [not np.array_equal(RandomBrightnessContrast()(image, masks, np.random.default_rng(s))[0], image)
               for s in range(400)]
    assert 0.68 < np.mean(applied) < 0.82


def test_brightness_contrast_draws_stay_in_their_limits():
    image = np.full((4, 4, 3), 100, np.uint8)
    masks = np.zeros((4, 4, 1), np.int32)
    values = [int(RandomBrightnessContrast(p=1.0)(image, masks, np.random.default_rng(s))[0][0, 0, 0])
              for s in range(300)]
    # 100 * [0.85, 1.4] + 255 * [-0.25, 0.25]: from 21 to 203.
    assert 21 <= min(values) < 60 and 160 < max(values) <= 203


def test_rgb_shift_moves_each_channel_by_its_own_offset_and_clips():
    image = np.array([[[0, 100, 255], [3, 250, 128]]], np.uint8)
    masks = np.zeros((1, 2, 1), np.int32)
    shifted, out_masks = RGBShift((-5, -5), (8, 8), (0, 0), p=1.0)(image, masks, np.random.default_rng(0))
    assert out_masks is masks and shifted.dtype == np.uint8
    assert shifted.tolist() == [[[0, 108, 255], [0, 255, 128]]]
    offsets = []
    for seed in range(300):
        out = RGBShift(p=1.0)(np.full((2, 2, 3), 128, np.uint8), masks, np.random.default_rng(seed))[0]
        offsets.append(out[0, 0].astype(int) - 128)
    offsets = np.array(offsets)
    assert (np.abs(offsets) <= 10).all() and offsets.min() <= -9 and offsets.max() >= 9
    assert not (offsets[:, 0] == offsets[:, 1]).all()   # the channels move independently
    applied = [RGBShift()(image, masks, np.random.default_rng(s))[0] is not image for s in range(400)]
    assert 0.68 < np.mean(applied) < 0.82


def test_training_pipeline_always_gives_the_crop_and_keeps_image_and_masks_aligned():
    augmentation = training_augmentation((64, 48))
    assert [type(t).__name__ for t in augmentation.transforms] == [
        "UniformRandomResize", "HorizontalFlip", "PadIfNeeded", "RandomCrop", "RandomBrightnessContrast", "RGBShift"]
    resize, flip, pad, crop, brightness, shift = augmentation.transforms
    assert resize.scale_range == (0.75, 1.40) and flip.p == 0.5 and (pad.min_height, pad.min_width) == (64, 48)
    assert (crop.height, crop.width) == (64, 48) and brightness.p == shift.p == 0.75
    assert brightness.brightness_limit == (-0.25, 0.25) and brightness.contrast_limit == (-0.15, 0.4)
    assert shift.limits == [(-10, 10)] * 3
    for height, width in [(40, 30), (64, 48), (120, 90), (50, 200)]:
        masks = np.zeros((height, width, 1), np.int32)
        masks[height // 4: 3 * height // 4, : width // 2] = 3
        image = np.where(masks == 3, 200, 60).repeat(3, axis=2).astype(np.uint8)
        for seed in range(10):
            out_image, out_masks = augmentation(image, masks, np.random.default_rng(seed))
            assert out_image.shape == (64, 48, 3) and out_image.dtype == np.uint8
            assert out_masks.shape == (64, 48, 1) and out_masks.dtype == np.int32
            assert set(np.unique(out_masks)) <= {0, 3}
            # Colour jitter is monotonic: the object stays the brighter part wherever it is.
            obj, rest = out_image[out_masks[:, :, 0] == 3, 0], out_image[out_masks[:, :, 0] == 0, 0]
            if obj.size > 20 and rest.size > 20:
                assert np.median(obj) > np.median(rest)
        first = augmentation(image, masks, np.random.default_rng(3))
        again = augmentation(image, masks, np.random.default_rng(3))
        assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_validation_pipeline_only_pads_and_crops():
    image, masks = marked(30, 40)
    out_image, out_masks = validation_augmentation((32, 32))(image, masks, np.random.default_rng(1))
    assert out_image.shape == (32, 32, 3) and out_masks.shape == (32, 32, 2)
    real = out_masks[:, :, 0] > 0   # padded rows are zero in both
    assert real.sum() == 30 * 32 and np.array_equal(decode(out_image)[real] + 1, out_masks[:, :, 0][real])
    assert not out_image[~real].any()


def test_compose_with_a_training_sample():
    image, _ = marked(30, 40)
    masks = np.zeros((30, 40), np.int32)
    masks[:, :10] = 5                                   # the object: the 10 left columns
    flip_then_crop = Compose([HorizontalFlip(p=1.0), RandomCrop(30, 20)])
    kept = set()
    for seed in range(30):
        sample = TrainingSample(image, masks, objects_ids=[5])
        sample.augment(flip_then_crop, np.random.default_rng(seed))
        left = 39 - int(decode(sample.image)[0, 0]) % 40   # flipped column of the crop's first pixel
        assert np.array_equal(sample.image, image[:, ::-1][:, left:left + 20])
        columns = max(0, left + 20 - 30)                   # the object now fills flipped columns 30-39
        assert len(sample) == (columns > 0)
        if columns:
            assert sample.objects[0].area == 30 * columns and (sample.get_object_mask(0)[:, 20 - columns:] == 1).all()
        kept.add(columns > 0)
    assert kept == {True, False}


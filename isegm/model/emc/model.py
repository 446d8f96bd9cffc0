"""EMC-Click (Du, Yuan, Wang, Wang, "Efficient Mask Correction for Click-Based Interactive Image
Segmentation", CVPR 2023): a heavy base network run once, on the first click, and a light
correction network run on every click.

::

    encode_image(image, points)  first click: base network on the image + first-click disk
      -> EMCState(image, feature, prev_logits_lr = coarse logits)
    decode(state, points)        every click, the first one included
      click disks + distances -> CorrectionNetwork(image, feature, prev_logits_lr)
      -> refined logits; state.prev_logits_lr <- refined 1/4-resolution logits

``model(x, points)['instances']`` is the first click's full forward (``decode(encode_image(...))``).
The base network is pluggable: HRNet + OCR (whose click encoder ``maps_transform`` sits at the
model's top level) or SegFormer (which embeds the click itself). State-dict keys match the
authors' (``maps_transform.*``, ``feature_extractor.*``, ``refiner.*``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from ..click_maps import click_maps
from ..normalize import ImageNormalize
from .corrector import STRIDE, CorrectionNetwork, CorrectionOutput, resize_ac
from .hrnet import HRNetOCR, maps_transform
from .segformer import SEGFORMER_CONFIGS, SegFormerFeatureExtractor

BASES = ("hrnet", "segformer")


@dataclass(frozen=True)
class EMCConfig:
    """Everything that fixes the architecture.

    ``base``: ``'hrnet'`` (``hrnet_width``, ``ocr_width``, ``small``) or ``'segformer'``
    (``segformer_version`` ``'b0'`` / ``'b3'``). ``mid_dims``: correction-network width = number
    of templates per polarity. ``norm_radius``: click-disk radius in network pixels.
    ``use_leaky_relu``: the activation of HRNet's ``maps_transform``.
    """

    base: str
    hrnet_width: int = 18
    ocr_width: int = 48
    small: bool = False
    segformer_version: str = "b0"
    mid_dims: int = 64
    norm_radius: float = 5
    use_leaky_relu: bool = True

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"EMCConfig.base is {self.base!r}; known: {', '.join(BASES)}")
        if self.base == "segformer" and self.segformer_version not in SEGFORMER_CONFIGS:
            raise ValueError(f"EMCConfig.segformer_version is {self.segformer_version!r}; "
                             f"known: {', '.join(SEGFORMER_CONFIGS)}")

    @property
    def feature_channels(self) -> int:
        """Channels of the base feature the correction network reads."""
        if self.base == "hrnet":
            return 2 * self.ocr_width
        return SEGFORMER_CONFIGS[self.segformer_version]["decoder_dim"]

    def to_dict(self) -> Dict:
        return asdict(self)


# The five released models (checkpoint names of the authors' README) and their scripts' settings.
EMC_CONFIGS: Dict[str, EMCConfig] = {
    "hr18s": EMCConfig("hrnet", hrnet_width=18, ocr_width=48, small=True, mid_dims=64),
    "hr18": EMCConfig("hrnet", hrnet_width=18, ocr_width=64, small=False, mid_dims=96),
    "hr32": EMCConfig("hrnet", hrnet_width=32, ocr_width=128, small=False, mid_dims=96),
    "segb0": EMCConfig("segformer", segformer_version="b0", mid_dims=64),
    "segb3": EMCConfig("segformer", segformer_version="b3", mid_dims=96),
}


def first_click_points(points: Tensor) -> Tensor:
    """``points`` with every click but the first (click index 0) turned into padding."""
    return points.masked_fill((points[..., 2] > 0).unsqueeze(-1), -1)


@dataclass
class EMCState:
    """What one interaction keeps between clicks (the authors' cached ``outputs``).

    ``image``: normalised RGB ``[B, 3, H, W]``. ``feature``: the base network's feature
    ``[B, C, H/4, W/4]``. ``coarse_logits_lr``: the base network's logits ``[B, 1, H/4, W/4]``.
    ``prev_logits_lr``: the previous mask the next ``decode`` reads; the coarse logits at
    first, then each click's refined 1/4-resolution logits (per batch item, so a flipped copy
    feeds back its own prediction).
    """

    image: Tensor
    feature: Tensor
    coarse_logits_lr: Tensor
    prev_logits_lr: Tensor

    @property
    def image_size(self) -> Tuple[int, int]:
        return tuple(self.image.shape[-2:])


class EMCClick(nn.Module):
    """EMC-Click: base network + ``CorrectionNetwork`` (see the module docstring)."""

    def __init__(self, config: EMCConfig) -> None:
        super().__init__()
        self.config = config
        # registration order = the authors' state-dict order
        if config.base == "hrnet":
            self.maps_transform = maps_transform(1, config.use_leaky_relu)
            self.feature_extractor = HRNetOCR(config.hrnet_width, config.ocr_width, config.small)
        else:
            self.maps_transform = None
            self.feature_extractor = SegFormerFeatureExtractor(**SEGFORMER_CONFIGS[config.segformer_version])
        self.refiner = CorrectionNetwork(config.feature_channels, config.mid_dims)
        self.normalize = ImageNormalize()

    def _check(self, image: Tensor, points: Tensor) -> None:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W] RGB in [0, 1], got {tuple(image.shape)}")
        H, W = image.shape[-2:]
        if H % STRIDE or W % STRIDE:
            raise ValueError(f"image sides must be multiples of {STRIDE} (the authors' predictor resizes to "
                             f"side // 4 * 4), got {H}x{W}; resize the image first")
        if (H // STRIDE) * (W // STRIDE) < self.config.mid_dims:
            raise ValueError(f"a {H}x{W} image has fewer 1/4-resolution pixels than the {self.config.mid_dims} "
                             "templates per polarity the correction network picks; use a larger image")
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] % 2 or points.shape[0] != image.shape[0]:
            raise ValueError(f"points must be [B={image.shape[0]}, 2N, 3] (y, x, click index; positives first), "
                             f"got {tuple(points.shape)}")

    def encode_image(self, image: Tensor, points: Optional[Tensor] = None) -> EMCState:
        """The base network, once per object: ``image`` ``[B, 3, H, W]`` in [0, 1] (H, W
        multiples of 4) and ``points`` ``[B, 2N, 3]``, of which only the first click (index 0)
        is used, as its positive disk."""
        if points is None:
            raise ValueError("EMC-Click's base network reads the object's first click: pass its points")
        image, out = self.run_base(image, points)
        coarse = out["instances_lr"]
        return EMCState(image, out["feature"], coarse, coarse)

    def run_base(self, image: Tensor, points: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """``encode``'s computation: the normalised image and every output of the base network
        (``instances_lr``, ``feature``, and for HRNet ``instances_aux``, the OCR soft-region
        logits that training supervises), all at 1/4 resolution."""
        self._check(image, points)
        image = self.normalize(image)
        disk = click_maps(first_click_points(points), image.shape[-2:], self.config.norm_radius)[0][:, :1]
        if self.maps_transform is not None:
            disk = self.maps_transform(disk)
        return image, self.feature_extractor(image, disk)

    def correct(self, state: EMCState, points: Tensor,
                templates: Optional[Tuple[Tensor, Tensor]] = None) -> CorrectionOutput:
        """One correction step with all clicks ``points`` ``[B, 2N, 3]``; stores the refined
        1/4-resolution logits in ``state.prev_logits_lr`` for the next click. ``templates``:
        see ``CorrectionNetwork.forward``."""
        self._check(state.image, points)
        disks, dist_sq = click_maps(points, state.image_size, self.config.norm_radius)
        out = self.refiner(state.image, disks, dist_sq, state.feature, state.prev_logits_lr, points, templates)
        state.prev_logits_lr = out.logits_lr.detach()
        return out

    def decode(self, state: EMCState, points: Tensor, prev_mask: Optional[Tensor] = None) -> Tensor:
        """Per-click path: refined logits ``[B, 1, H, W]`` (before sigmoid); updates ``state``.
        The previous mask is the state's own fed-back logits: ``prev_mask`` must be None."""
        if prev_mask is not None:
            raise ValueError("EMC-Click feeds back its own refined logits (state.prev_logits_lr); pass prev_mask=None")
        return self.correct(state, points).logits

    def forward(self, x: Tensor, points: Tensor, state: Optional[EMCState] = None) -> Dict[str, object]:
        """``x`` = ``cat([image, prev_mask], 1)`` ``[B, 4, H, W]`` (the family's input; the 4th
        channel is ignored, as by the authors: the previous mask comes from ``state``).

        Without ``state`` the base network runs (a first click). Returns ``instances`` (refined
        logits ``[B, 1, H, W]``), ``instances_lr`` (the same at 1/4), ``coarse`` (the base
        network's logits upsampled to H x W) and ``state`` for the next click.
        """
        if x.dim() != 4 or x.shape[1] != 4:
            raise ValueError(f"input must be [B, 4, H, W] (RGB in [0, 1] + previous mask), got {tuple(x.shape)}")
        if state is None:
            state = self.encode_image(x[:, :3], points)
        out = self.correct(state, points)
        return {"instances": out.logits, "instances_lr": out.logits_lr,
                "coarse": resize_ac(state.coarse_logits_lr, state.image_size), "state": state}


def emc_config(name: str) -> EMCConfig:
    """The config of one of the five released EMC-Click models (``EMC_CONFIGS``)."""
    if name not in EMC_CONFIGS:
        raise ValueError(f"unknown EMC-Click model {name!r}; known: {', '.join(EMC_CONFIGS)}")
    return EMC_CONFIGS[name]


def build_emc(name: str) -> EMCClick:
    """One of the five released EMC-Click models (``EMC_CONFIGS``), randomly initialised."""
    return EMCClick(emc_config(name))

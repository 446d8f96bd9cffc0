"""``skipclick-weights``: the released weight files of both model families, and which of them
a folder holds.

``skipclick-weights list`` prints ``RELEASES`` as the table of ``docs/weights.md``;
``skipclick-weights check [PATH ...]`` reads every ``.pth`` / ``.pt`` file of the folders
(default: the folders config.yml names) with the weights-only loader of
``isegm.model.load_checkpoint`` and says what each holds. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from ..model.backbones import BACKBONES
from ..model.checkpoint import load_checkpoint, read_checkpoint_file
from ..model.emc.family import FAMILY as EMC_FAMILY
from ..model.emc.model import build_emc
from ..model.emc.pretrained import IMAGENET_WEIGHTS, load_imagenet_backbone
from ..model.families import family_of
from ..model.skipclick.family import FAMILY as SKIPCLICK_FAMILY
from ..model.skipclick.model import SkipClick
from ..model.skipclick.variants import backbone_config_key
from ..utils.config import add_config_argument, load_config
from ..utils.files import file_sha256
from .common import HelpFormatter, add_debug_argument, exit_error, main_entry

SUFFIXES = (".pth", ".pt")
_SKIPCLICK_DOWNLOAD = "https://mediastore.rz.uni-augsburg.de/get/{}/"


@dataclass(frozen=True)
class Release:
    """One released file: the name our examples use, what it is and where to get it.

    ``kind``: ``model`` (a trained model, ``variant`` of the family ``family``), ``backbone``
    (a DINOv2 / DINOv3 release, ``variant`` is its ``BACKBONES`` name) or ``imagenet`` (the
    ImageNet classification backbone from which EMC-Click variant ``variant`` is trained).
    ``use``: our model file (``models/...``) or the config.yml key that points to the file.
    ``params``: the parameter count of what the file loads into (None: not counted).
    """

    file: str
    kind: str
    family: str
    row: str
    variant: str
    use: str
    params: Optional[int]
    source: str

    @property
    def identity(self) -> Tuple[str, str, str]:
        """What a file must load as to be this release."""
        return self.kind, self.family, self.variant


def _skipclick(file: str, row: str, variant: str, params: int, key: str) -> Release:
    return Release(file, "model", SKIPCLICK_FAMILY.name, row, variant, f"models/iter_mask/{variant}.py", params,
                   _SKIPCLICK_DOWNLOAD.format(key))


def _emc(variant: str, row: str, params: int) -> Release:
    return Release(f"{variant}.pth", "model", EMC_FAMILY.name, row, variant, f"models/emcclick/{variant}.py", params,
                   EMC_FAMILY.weights)


def _backbone(name: str, row: str, params: int) -> Release:
    spec = BACKBONES[name]
    return Release(spec.weights_file, "backbone", SKIPCLICK_FAMILY.name, row, name, backbone_config_key(name),
                   params, spec.weights_source)


def _imagenet(variant: str, row: str) -> Release:
    spec = IMAGENET_WEIGHTS[variant]
    return Release(spec.file_name, "imagenet", EMC_FAMILY.name, row, variant, spec.config_key, None, spec.source)


# Parameter counts: each variant built with random weights (``FAMILY.build(variant)``; for a
# backbone ``build_backbone(name)``), summed over ``parameters()``; tests/test_weights.py checks them.
RELEASES: List[Release] = [
    # SkipClick (github.com/Schorob/skipclick, README "Weights"): the paper's Table 2 rows
    _skipclick("skipclick_baseline.pth", "Table 2: Baseline", "baseline", 126_589_505, "Gf3Aza1fSE"),
    _skipclick("skipclick_frozen_backbone.pth", "Table 2: + Frozen Backbone", "frozen_backbone", 126_589_505,
               "2JipuNEGYO"),
    _skipclick("skipclick_intermediate_features.pth", "Table 2: + Intermediate Features", "intermediate_features",
               128_949_569, "aOa4lakFcM"),
    _skipclick("skipclick_dinov2.pth", "Table 2: + Skip Connections (SkipClick, DINOv2)", "skipclick", 153_164_417,
               "MQjMyFYnZ7"),
    # ... and the DINOv3 model of their README's "SkipClick with a DINOv3 Backbone" (not in the paper)
    _skipclick("skipclick_dinov3.pth", "authors' README: SkipClick (DINOv3)", "skipclick_dinov3", 152_204_417,
               "EkSQanPSOL"),
    # EMC-Click (github.com/feiaxyt/EMC-Click/releases), the paper's five backbones
    _emc("hr18s", "EMC-Click, HRNet-18s (W18-small-v2 + OCR 48)", 4_322_416),
    _emc("hr18", "EMC-Click, HRNet-18 (W18 + OCR 64)", 10_239_828),
    _emc("hr32", "EMC-Click, HRNet-32 (W32 + OCR 128)", 31_171_460),
    _emc("segb0", "EMC-Click, SegFormer-B0 (MiT-B0)", 3_828_770),
    _emc("segb3", "EMC-Click, SegFormer-B3 (MiT-B3)", 45_896_738),
    # Backbones from which SkipClick is trained
    _backbone("dinov2_vitb14_reg", "DINOv2 ViT-B/14, 4 registers (every DINOv2 row)", 86_583_552),
    _backbone("dinov3_vitb16", "DINOv3 ViT-B/16 (SkipClick (DINOv3))", 85_669_632),
    # ImageNet backbones from which EMC-Click is trained
    _imagenet("hr18s", "ImageNet HRNet-W18-small-v2 (training hr18s)"),
    _imagenet("hr18", "ImageNet HRNetV2-W18 (training hr18)"),
    _imagenet("hr32", "ImageNet HRNetV2-W32 (training hr32)"),
    _imagenet("segb0", "ImageNet MiT-B0 (training segb0)"),
    _imagenet("segb3", "ImageNet MiT-B3 (training segb3)"),
]

_HEADER = ("file (our examples)", "family", "paper row / what", "variant", "model file / config key", "parameters",
           "where to get it")


def _params(count: Optional[int]) -> str:
    return "-" if count is None else f"{count:,}"


def markdown_table(releases: Sequence[Release] = RELEASES) -> str:
    """``releases`` as the Markdown table of ``docs/weights.md``."""
    labels = {f.name: f.label for f in (SKIPCLICK_FAMILY, EMC_FAMILY)}
    rows = [_HEADER, ("---",) * len(_HEADER)]
    for r in releases:
        family = labels[r.family] if r.kind == "model" else f"{labels[r.family]} (training)"
        rows.append((f"`{r.file}`", family, r.row, f"`{r.variant}`", f"`{r.use}`", _params(r.params), r.source))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# --- check ------------------------------------------------------------------------------------

@dataclass
class FileReport:
    """What ``inspect_file`` found: ``error`` is None when the file loads."""

    path: Path
    sha256: str
    kind: str = ""
    family: str = ""
    variant: str = ""
    params: Optional[int] = None
    error: Optional[str] = None

    @property
    def release(self) -> Optional[Release]:
        """The table's row this file is, if any."""
        return next((r for r in RELEASES if self.error is None and r.identity == (self.kind, self.family,
                                                                                   self.variant)), None)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _variant_of(family, config) -> str:
    """The family's named variant whose config ``config`` is, or "" for another configuration."""
    return next((name for name in family.variants if family.variant_config(name) == config), "")


def _as_imagenet_backbone(path: Path) -> Optional[str]:
    """The EMC-Click variant whose base network an ImageNet HRNet / MiT file fits (the one its
    file name names tried first), or None."""
    order = sorted(IMAGENET_WEIGHTS, key=lambda v: IMAGENET_WEIGHTS[v].file_name != path.name)
    for variant in order:
        try:
            load_imagenet_backbone(build_emc(variant), path, variant)
        except ValueError:
            continue
        return variant
    return None


def inspect_file(path: Path) -> FileReport:
    """Load ``path`` the way the commands do (weights-only: nothing in it runs) and report what
    it holds: a model of a family and its variant, a DINOv2 / DINOv3 backbone, or an ImageNet
    backbone of EMC-Click; else the loader's error."""
    report = FileReport(path, file_sha256(path))
    try:
        obj = read_checkpoint_file(os.fspath(path))
    except (ValueError, OSError) as err:
        report.error = str(err)
        return report
    flat = isinstance(obj, Mapping) and not {"format", "config"} & set(obj)
    del obj
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. "only backbone weights": the report says what it is
            model = load_checkpoint(path)
    except Exception as err:   # any file that does not load is reported, not a crash of the whole check
        variant = _as_imagenet_backbone(path) if flat else None
        if variant is None:
            report.error = str(err)
        else:
            report.kind, report.family, report.variant = "imagenet", EMC_FAMILY.name, variant
        return report
    family = family_of(model)
    if flat and isinstance(model, SkipClick):   # a DINOv2 / DINOv3 release file
        report.kind, report.family, report.variant = "backbone", family.name, model.config.backbone
        report.params = _count(model.feature_extractor.vit)
    else:
        report.kind, report.family, report.variant = "model", family.name, _variant_of(family, model.config)
        report.params = _count(model)
    return report


def _describe(report: FileReport) -> str:
    if report.error is not None:
        return f"does not load: {report.error}"
    release = report.release
    what = {"model": f"{report.family} model, variant {report.variant or '(a configuration of no named variant)'}",
            "backbone": f"{report.variant} backbone",
            "imagenet": f"ImageNet backbone of EMC-Click {report.variant}"}[report.kind]
    if release is None:
        listed = "no file of the table"
    elif release.params is None or report.params == release.params:
        listed = f"the configuration of {release.file} in the table"
    else:
        listed = f"the configuration of {release.file}, but the table lists {_params(release.params)} parameters"
    params = "" if report.params is None else f", {_params(report.params)} parameters"
    return f"loads: {what}{params} ({listed})"


def default_folders(config_path: Optional[str]) -> List[Path]:
    """The folders config.yml names for weights (``CHECKPOINTS_PATH`` and those of the
    ``*_WEIGHTS`` keys) that exist; ``./weights`` when none does."""
    try:
        config: Dict[str, Optional[str]] = load_config(config_path)
    except (OSError, ValueError) as err:
        if config_path is not None:
            exit_error(str(err))
        config = {}
    named = [config.get("CHECKPOINTS_PATH")] + [os.path.dirname(v) for k, v in config.items()
                                                if k.endswith("_WEIGHTS") and isinstance(v, str) and v]
    folders: List[Path] = []
    for value in named:
        if value and Path(value).is_dir() and Path(value).resolve() not in [f.resolve() for f in folders]:
            folders.append(Path(value))
    return folders or [Path("weights")]


def _files(paths: Sequence[Path]) -> List[Path]:
    files: List[Path] = []
    for path in paths:
        found = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        files += [f for f in found if f.resolve() not in [g.resolve() for g in files]]
    return files


def check(paths: Sequence[Path], out: Optional[TextIO] = None) -> int:
    """Print what each weight file in ``paths`` (folders or files) holds, then the table's files
    none of them is, with where to get them (on ``out``, default stdout). Returns 1 when a file
    does not load, else 0."""
    out = out or sys.stdout
    files = _files([p for p in paths if p.exists()])
    where = ", ".join(os.fspath(p) + ("" if p.exists() else " (absent)") for p in paths)
    print(f"weights in {where}: {len(files)} file(s)", file=out)
    reports = []
    for path in files:
        report = inspect_file(path)
        reports.append(report)
        print(f"{os.fspath(path)}\n  {_describe(report)}\n  sha256 {report.sha256}", file=out)
    present = {r.release for r in reports if r.release is not None}
    missing = [r for r in RELEASES if r not in present]
    if missing:
        print("not present (docs/weights.md):", file=out)
        for r in missing:
            where = f"set {r.use} in config.yml" if r.kind != "model" else "pass it with --checkpoint"
            print(f"  {r.file} ({r.row}): {r.source}; {where}", file=out)
    return 1 if any(r.error is not None for r in reports) else 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``skipclick-weights``."""
    parser = argparse.ArgumentParser(
        prog="skipclick-weights", formatter_class=HelpFormatter,
        description="The released weight files of SkipClick and EMC-Click (list), and which of them are present "
                    "and load (check). Offline: nothing is downloaded.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,check}")
    list_parser = commands.add_parser("list", help="print the table of released files (docs/weights.md)")
    check_parser = commands.add_parser(
        "check",
        help="say for each .pth / .pt file whether it loads, its family, variant, parameters and sha256, "
             "and which released files are missing")
    check_parser.add_argument("paths", nargs="*", metavar="PATH", type=Path,
                              help="folders or files to check (default: the folders config.yml names for "
                                   "CHECKPOINTS_PATH and the *_WEIGHTS keys, else ./weights)")
    add_config_argument(check_parser)
    for command in (parser, list_parser, check_parser):   # before or after the sub-command
        add_debug_argument(command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``skipclick-weights list`` / ``skipclick-weights check [PATH ...]``; exit status 0, 1 when a
    file does not load, 2 on bad input."""
    args = build_parser().parse_args(argv)
    if args.command == "list":
        print(markdown_table())
        return 0
    if args.paths:
        absent = [p for p in args.paths if not p.exists()]
        if absent:
            exit_error(f"{os.fspath(absent[0])!r} does not exist; pass a folder or a .pth / .pt file")
        paths = list(args.paths)
    else:
        paths = default_folders(args.config)
    return check(paths)


if __name__ == "__main__":
    main_entry(main)

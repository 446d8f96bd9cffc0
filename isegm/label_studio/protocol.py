"""Label Studio's side of the conversation: the labeling config, the interactive ``context`` of
a ``/predict`` request, and the ``BrushLabels`` result that answers it.

A smart ``KeyPointLabels`` region of the context looks like::

    {"type": "keypointlabels", "from_name": "keypoint", "to_name": "image",
     "original_width": 640, "original_height": 480, "is_positive": true,
     "value": {"x": 41.5, "y": 62.0, "width": 0.5, "keypointlabels": ["athlete"]}}

x and y are percent of the original image's width and height, measured from its top-left
corner; the click is at pixel (x / 100 * W - 0.5, y / 100 * H - 0.5) (pixel centres at integers,
as the ``Predictor`` counts). ``is_positive`` false (Alt + click in Label Studio) is a click on
the background.
"""
from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .rle import mask_to_rle


class ProtocolError(ValueError):
    """A request Label Studio's protocol does not allow (or we cannot serve); the message is for the user."""


@dataclass(frozen=True)
class BrushTarget:
    """Where a mask goes: the ``BrushLabels`` control (``from_name``) of the ``Image`` tag
    (``to_name``), the task data key holding the image URL (``data_key``) and its labels."""

    from_name: str
    to_name: str
    data_key: str
    labels: Tuple[str, ...]


@dataclass(frozen=True)
class Keypoints:
    """The clicks of one object: (x, y) percent of the image and whether each is positive, in
    click order; the label chosen and the ``Image`` tag they were placed on."""

    points: Tuple[Tuple[float, float], ...]
    positive: Tuple[bool, ...]
    label: str
    to_name: str

    def pixels(self, height: int, width: int) -> np.ndarray:
        """(N, 2) pixel coordinates (x, y) in an H x W image, clipped to it."""
        xy = np.array(self.points, dtype=np.float64) / 100 * (width, height) - 0.5
        return np.clip(xy, 0, (width - 1, height - 1))


def brush_targets(label_config: str) -> Dict[str, BrushTarget]:
    """The ``BrushLabels`` controls of a labeling config, by the name of their ``Image`` tag."""
    if not isinstance(label_config, str) or not label_config.strip():
        raise ProtocolError("the request has no label_config (the project's labeling config)")
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as err:
        raise ProtocolError(f"the labeling config is not valid XML ({err})") from None
    images = {tag.get("name"): tag.get("value", "") for tag in root.iter() if tag.tag == "Image"}
    targets: Dict[str, BrushTarget] = {}
    for tag in root.iter():
        if tag.tag != "BrushLabels":
            continue
        to_name = tag.get("toName", "")
        if to_name in images and to_name not in targets and images[to_name].startswith("$"):
            labels = tuple(label.get("value", "") for label in tag.iter() if label.tag == "Label")
            targets[to_name] = BrushTarget(tag.get("name", ""), to_name, images[to_name][1:], labels)
    if not targets:
        raise ProtocolError("the labeling config has no <BrushLabels> on an <Image value=\"$...\">; use the "
                            "config of the documentation (Image, BrushLabels and smart KeyPointLabels)")
    return targets


def read_keypoints(context: Any) -> Keypoints:
    """The keypoints of an interactive ``context`` (``{"result": [region, ...]}``), in order."""
    if not isinstance(context, dict) or not isinstance(context.get("result"), list) or not context["result"]:
        raise ProtocolError("the request's context has no 'result' list of smart keypoints; this backend answers "
                            "interactive requests (place a smart KeyPointLabels point in Label Studio)")
    points, positive, labels, to_names = [], [], [], set()
    for index, region in enumerate(context["result"]):
        where = f"context.result[{index}]"
        if not isinstance(region, dict):
            raise ProtocolError(f"{where} must be an object, got {type(region).__name__}")
        if region.get("type") != "keypointlabels":
            raise ProtocolError(f"{where} is of type {region.get('type')!r}; this backend takes smart "
                                "keypoints (keypointlabels) only")
        value = region.get("value")
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} has no 'value' object")
        xy = []
        for key in ("x", "y"):
            number = value.get(key)
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
                    or not 0 <= number <= 100:
                raise ProtocolError(f"{where}.value.{key} = {number!r}: expected a percent of the image in [0, 100]")
            xy.append(float(number))
        points.append((xy[0], xy[1]))
        positive.append(bool(region.get("is_positive", True)))
        chosen = value.get("keypointlabels")
        if isinstance(chosen, list) and chosen and isinstance(chosen[0], str):
            labels.append(chosen[0])
        to_names.add(region.get("to_name"))
    if len(to_names) > 1:
        raise ProtocolError(f"the keypoints lie on several images ({sorted(map(str, to_names))}); one object is on one")
    if not labels:
        raise ProtocolError("the keypoints carry no label (value.keypointlabels); choose a label before clicking")
    return Keypoints(tuple(points), tuple(positive), labels[-1], str(to_names.pop()))


def brush_result(mask: np.ndarray, target: BrushTarget, label: str, model_version: str,
                 score: Optional[float] = None) -> Dict[str, Any]:
    """One prediction for Label Studio: a ``BrushLabels`` region of ``mask`` (H x W, the original
    size) in brush RLE, labelled ``label``."""
    height, width = mask.shape
    region = {"id": uuid.uuid4().hex[:10], "from_name": target.from_name, "to_name": target.to_name,
              "type": "brushlabels", "original_width": int(width), "original_height": int(height),
              "image_rotation": 0, "readonly": False,
              "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}}
    prediction: Dict[str, Any] = {"result": [region], "model_version": model_version}
    if score is not None:
        region["score"] = prediction["score"] = float(score)
    return prediction


def check_label(label: str, target: BrushTarget) -> None:
    """Refuse a keypoint label that the ``BrushLabels`` control does not have."""
    if target.labels and label not in target.labels:
        raise ProtocolError(f"the keypoint label {label!r} is not a label of <BrushLabels name="
                            f"\"{target.from_name}\"> ({', '.join(target.labels)}); give both controls the same labels")


def task_image_url(task: Any, target: BrushTarget) -> Tuple[str, Optional[int]]:
    """The image URL of a task (its ``data[data_key]``) and the task's id."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise ProtocolError("the request's task has no 'data' object")
    url = task["data"].get(target.data_key)
    if not isinstance(url, str) or not url:
        raise ProtocolError(f"the task's data has no image URL under {target.data_key!r} (the <Image value="
                            f"\"${target.data_key}\"> of the config); keys: {sorted(task['data'])}")
    task_id = task.get("id")
    return url, task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else None


def tasks_of(request: Dict[str, Any]) -> Sequence[Dict[str, Any]]:
    """The ``tasks`` list of a ``/predict`` request."""
    tasks = request.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ProtocolError("the request has no 'tasks' list")
    return tasks


"""ONNX export (``isegm.onnx.export``, ``skipclick-export``) and the torch-free onnxruntime predictor
(``isegm.onnx.engine``).

Exports go through the command where they can (``skipclick-export --check``). Checked against
PyTorch within 1e-4: the ``tiny`` SkipClick variant (every weight random, so that no layer is the
identity; logits for 1 and several clicks on one graph, the evaluation chain's probability maps
over simulated clicks on a GrabCut image, states, the import without torch, errors), EMC-Click
HRNet-18s (random weights; graphs of any size, the family's torch protocol over simulated
clicks), and the reference models (``shared/reference/model``: DINOv2 and DINOv3 ViT-B with
``fill.py`` weights), which also match the authors' logits. ``slow``: the authors' checkpoint
format through the command.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from conftest import REPO, reference_file, shared_path
from isegm import __version__
from isegm.cli.export import main as export_main
from isegm.inference.clicker import Click, Clicker
from isegm.inference.predictor import get_predictor
from isegm.model import build_emc, build_skipclick, save_checkpoint, save_emc_checkpoint
from isegm.inference.clicker import points_array
from isegm.onnx.engine import FORMAT, OnnxClickPredictor, OnnxModel, read_meta
from isegm.onnx.export import check_export, export_model
from isegm.utils.files import file_sha256

# onnxruntime against PyTorch, float32 both: the same function in other kernels (seen: ~3e-6).
ATOL = 1e-4
TINY_SIZE = 112
EMC_SHORT_SIDE = 128


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_skipclick("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():   # the detail refiner's last conv starts at zero: no identity layers
            p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    save_checkpoint(tiny_model, path)
    return path


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported by ``skipclick-export --check``: (folder, printed lines)."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert export_main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--check"]) == 0
    return out, lines


@pytest.fixture(scope="module")
def emc_model():
    torch.manual_seed(0)
    return build_emc("hr18s").eval()


@pytest.fixture(scope="module")
def emc_exported(emc_model, tmp_path_factory):
    """EMC-Click HRNet-18s (random weights) exported by the command: (folder, printed lines)."""
    path = tmp_path_factory.mktemp("emc") / "hr18s.pth"
    save_emc_checkpoint(emc_model, path)
    out = path.parent / "export"
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert export_main(["--checkpoint", str(path), "--out", str(out), "--short-side", str(EMC_SHORT_SIDE),
                            "--check"]) == 0
    return out, lines


def _torch_logits(model, image, points, prev):
    with torch.no_grad():
        return model.decode(model.encode_image(torch.from_numpy(image)), torch.from_numpy(points).float(),
                            torch.from_numpy(prev)).numpy()


def _points(pos, neg):
    """RITM rows for (y, x) lists of positive and negative clicks."""
    clicks = [Click(True, c) for c in pos] + [Click(False, c) for c in neg]
    for i, click in enumerate(clicks):
        clicks[i] = click.copy(indx=i)
    return points_array([clicks])


# ---------------------------------------------------------------------------------------------
# the export


def test_command_writes_a_checked_folder(exported, tiny_checkpoint):
    folder, lines = exported
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["family"] == "SkipClick" and meta["variant"] == "tiny"
    assert meta["size"] == [TINY_SIZE, TINY_SIZE] and meta["patch_size"] == 8
    assert meta["torch"] == torch.__version__ and meta["skipclick"] == __version__
    assert meta["source_sha256"] == file_sha256(tiny_checkpoint) and meta["source"] == "tiny.pth"
    # every image feature the encoder writes is a decoder input, and nothing else is
    assert meta["decoder"]["inputs"] == meta["encoder"]["outputs"] + ["points", "prev_mask"]
    assert meta["encoder"]["inputs"] == ["image"] and meta["decoder"]["outputs"] == ["logits"]
    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(str(folder / name))
    decoder = onnx.load(str(folder / "decoder.onnx"), load_external_data=False)
    points = next(i for i in decoder.graph.input if i.name == "points")
    assert points.type.tensor_type.shape.dim[1].dim_param   # the click rows are a dynamic axis
    check = next(line for line in lines if line.startswith("check:"))
    assert float(check.split("=")[1].split()[0]) < ATOL


def test_logits_equal_pytorch_for_one_and_several_clicks(exported, tiny_model):
    """One exported graph, 1 to 4 clicks of each sign (2 to 8 point rows), random previous masks."""
    model = OnnxModel(exported[0])
    rng = np.random.default_rng(1)
    image = rng.random((1, 3, TINY_SIZE, TINY_SIZE), dtype=np.float32)
    features = model.encode(image=image)
    seen = set()
    for pos, neg in ([(50, 60)], []), ([(50, 60), (20, 90.5)], [(100, 3)]), \
                    ([(5, 5), (60, 61), (70, 10), (111, 0)], [(30, 30), (31, 31)]):
        points = _points(pos, neg)
        prev = rng.random((1, 1, TINY_SIZE, TINY_SIZE), dtype=np.float32)
        logits = model.decode(**features, points=points.astype(np.float32), prev_mask=prev)["logits"]
        expected = _torch_logits(tiny_model, image, points, prev)
        assert logits.shape == (1, 1, TINY_SIZE, TINY_SIZE)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)
        seen.add(points.shape[1])
    assert seen == {2, 4, 8}


def test_check_export_reports_the_difference(exported, tiny_model):
    diff, scale = check_export(tiny_model, exported[0], clicks=5, seed=3)
    assert diff < ATOL and scale > 0.05


def test_settings_of_the_other_family_are_refused(tiny_model, emc_model, tmp_path):
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        export_model(tiny_model, tmp_path / "x", size=(100, 112))
    with pytest.raises(ValueError, match="short_side is EMC-Click's setting"):
        export_model(tiny_model, tmp_path / "x", short_side=384)
    with pytest.raises(ValueError, match="EMC-Click's graphs take any size"):
        export_model(emc_model, tmp_path / "y", size=(384, 512))
    with pytest.raises(TypeError, match="not Linear"):
        export_model(torch.nn.Linear(2, 2), tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---------------------------------------------------------------------------------------------
# the onnxruntime predictor


def _grabcut_instance():
    root = shared_path("datasets", "GrabCut")
    from isegm.data.datasets import GrabCutDataset
    sample = GrabCutDataset(root).get_sample(0)
    return sample.image, sample.gt_mask(0)


def test_predictor_equals_the_torch_chain_on_simulated_clicks(exported, tiny_model):
    """Five clicks of the RITM clicker on a GrabCut image: every probability map equals the torch
    chain's (``fixed112``, zoom-in suppressed, no flip), which also decides the clicks."""
    image, gt = _grabcut_instance()
    reference = get_predictor(tiny_model, eval_mode=f"fixed{TINY_SIZE}", suppress_zoom=True, with_flip=False)
    predictor = OnnxClickPredictor(exported[0])
    assert predictor.description == f"SkipClick tiny on onnxruntime ({TINY_SIZE}x{TINY_SIZE})"
    reference.set_input_image(image)
    predictor.set_input_image(image)
    predictor.precompute()
    clicker = Clicker(gt_mask=gt)
    pred = np.zeros(gt.shape, dtype=bool)
    for _ in range(5):
        clicker.make_next_click(pred)
        expected = reference.get_prediction(clicker)
        prob = predictor.get_prediction(clicker)
        assert prob.shape == gt.shape and prob.dtype == np.float32
        np.testing.assert_allclose(prob, expected, rtol=0, atol=ATOL)
        pred = expected > 0.49
    assert {c.is_positive for c in clicker.get_clicks()} == {True, False}   # both signs were exercised


def test_states_undo_and_mask_input(exported):
    image, gt = _grabcut_instance()
    predictor = OnnxClickPredictor(exported[0])
    predictor.set_input_image(image)
    clicker = Clicker(gt_mask=gt)
    clicker.make_next_click(np.zeros(gt.shape, dtype=bool))
    first = predictor.get_prediction(clicker)
    states = predictor.get_states()
    clicker.make_next_click(first > 0.49)
    second = predictor.get_prediction(clicker)
    predictor.set_states(states)                    # undo: the second click again gives the same map
    np.testing.assert_array_equal(predictor.get_prediction(clicker), second)
    np.testing.assert_array_equal(states["prev_prediction"][0, 0], first)   # a snapshot, unchanged

    logits = predictor.get_mask_input()
    assert logits.shape == (1, TINY_SIZE, TINY_SIZE) and logits.dtype == np.float32 and np.isfinite(logits).all()
    ramp = np.add.outer(np.linspace(-4, 4, TINY_SIZE), np.linspace(-2, 3, TINY_SIZE)).astype(np.float32)[None]
    predictor.set_mask_input(ramp)                  # to the image's size and back: a smooth map survives
    np.testing.assert_allclose(predictor.get_mask_input(), ramp, atol=0.05)
    predictor.set_mask_input(np.full((TINY_SIZE, TINY_SIZE), 20.0, dtype=np.float32))
    np.testing.assert_allclose(predictor.get_states()["prev_prediction"], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="mask_input must be"):
        predictor.set_mask_input(np.zeros((2, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="does not fit the image"):
        predictor.set_states({"prev_prediction": np.zeros((1, 1, 4, 4), dtype=np.float32)})


def test_engine_imports_and_runs_without_torch(exported):
    """In a fresh interpreter: the engine and the clicker predict a map and torch is never imported."""
    code = (
        "import sys, numpy as np\n"
        "from isegm.onnx.engine import OnnxClickPredictor\n"
        "from isegm.inference.clicker import Click, Clicker\n"
        f"p = OnnxClickPredictor({str(exported[0])!r})\n"
        "p.set_input_image(np.full((90, 130, 3), 128, np.uint8))\n"
        "c = Clicker(); c.add_click(Click(True, (40, 60)))\n"
        "prob = p.get_prediction(c)\n"
        "assert prob.shape == (90, 130), prob.shape\n"
        "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_engine_errors_name_the_folder_and_the_fix(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="skipclick-export --checkpoint PATH --out DIR"):
        read_meta(tmp_path / "absent")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks encoder.onnx, decoder.onnx"):
        read_meta(tmp_path)
    for name in ("encoder.onnx", "decoder.onnx"):
        (tmp_path / name).write_bytes(b"")
    meta = json.loads((exported[0] / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format": "skipclick-onnx/0"}))
    with pytest.raises(ValueError, match="format 'skipclick-onnx/0'.*export the model again"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "family": "RITM"}))
    with pytest.raises(ValueError, match="family 'RITM'; this engine runs SkipClick, EMCClick"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("not json")
    with pytest.raises(ValueError, match="cannot be read as JSON"):
        read_meta(tmp_path)
    predictor = OnnxClickPredictor(exported[0])
    with pytest.raises(RuntimeError, match="set_input_image"):
        predictor.get_prediction(Clicker())


# ---------------------------------------------------------------------------------------------
# EMC-Click: graphs of any size, the base network at an object's first click


def test_emc_export_is_checked_and_takes_any_size(emc_exported, emc_model):
    folder, lines = emc_exported
    meta = read_meta(folder)
    assert meta["family"] == "EMCClick" and meta["variant"] == "hr18s"
    assert meta["size"] is None and meta["short_side"] == EMC_SHORT_SIDE
    check = next(line for line in lines if line.startswith("check:"))
    assert float(check.split("=")[1].split()[0]) < ATOL
    # a size other than the traced one (384 x 512), 1 and several clicks
    model = OnnxModel(folder)
    rng = np.random.default_rng(2)
    image = rng.random((1, 3, 136, 200), dtype=np.float32)
    first = _points([(30, 50)], []).astype(np.float64)
    state = model.encode(image=image, points=first)
    assert state["feature"].shape[-2:] == (34, 50)
    with torch.no_grad():
        expected = emc_model.encode_image(torch.from_numpy(image), torch.from_numpy(first))
    prev, torch_prev = state["coarse_logits"], expected.prev_logits_lr
    for points in (first, _points([(30, 50), (100, 20)], [(3, 190)]), _points([(30, 50), (100, 20)], [(3, 190), (60, 60)])):
        out = model.decode(**state, prev_logits=prev, points=points)
        with torch.no_grad():
            expected.prev_logits_lr = torch_prev
            ref = emc_model.correct(expected, torch.from_numpy(points))
        np.testing.assert_allclose(out["logits"], ref.logits.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(out["logits_lr"], ref.logits_lr.numpy(), rtol=0, atol=ATOL)
        prev, torch_prev = out["logits_lr"], ref.logits_lr


def test_emc_predictor_equals_the_torch_protocol_on_simulated_clicks(emc_exported, emc_model):
    image, gt = _grabcut_instance()
    reference = get_predictor(emc_model, eval_mode=f"fixed{EMC_SHORT_SIDE}", with_flip=False)
    predictor = OnnxClickPredictor(emc_exported[0])
    assert predictor.description == f"EMCClick hr18s on onnxruntime (short side {EMC_SHORT_SIDE})"
    reference.set_input_image(image)
    predictor.set_input_image(image)
    predictor.precompute()
    np.testing.assert_array_equal(predictor.get_mask_input(), 0.0)   # before the first click
    clicker = Clicker(gt_mask=gt)
    pred = np.zeros(gt.shape, dtype=bool)
    for i in range(4):
        clicker.make_next_click(pred)
        expected = reference.get_prediction(clicker)
        np.testing.assert_allclose(predictor.get_prediction(clicker), expected, rtol=0, atol=ATOL)
        pred = expected > 0.49
        if i == 1:
            states = predictor.get_states()
    logits = predictor.get_mask_input()
    assert logits.shape == (1, *(s // 4 for s in reference.net_size))
    third = clicker.get_clicks()[:3]
    undo = Clicker(init_clicks=third)
    predictor.set_states(states)                     # back to two clicks, then the third again
    reference.set_states({"emc_state": None})
    for k in range(1, 4):
        expected = reference.get_prediction(Clicker(init_clicks=third[:k]))
    np.testing.assert_allclose(predictor.get_prediction(undo), expected, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="continues an object only from its own state"):
        predictor.set_mask_input(logits)


# ---------------------------------------------------------------------------------------------
# the command's errors: one line, exit status 2


def _fails(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        export_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_command_errors(capsys, tmp_path, tiny_checkpoint):
    out = str(tmp_path / "out")
    _fails(capsys, ["--checkpoint", str(tmp_path / "none.pth"), "--out", out], "no checkpoint at")
    _fails(capsys, ["--checkpoint", str(tiny_checkpoint), "--out", out, "--size", "100", "112"],
           "not a multiple of the patch size 8")
    _fails(capsys, ["--checkpoint", str(tiny_checkpoint), "--out", out, "--opset", "16"], "opset 17 or later")
    (tmp_path / "file").write_text("")
    _fails(capsys, ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "file")], "is a file")
    _fails(capsys, ["--checkpoint", str(tiny_checkpoint), "--out", out, "--short-side", "384"],
           "short_side is EMC-Click's setting")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# the reference models (a ViT-B export and check take about 15 s on 2 idle cores)


@pytest.mark.parametrize("name", ["skip", "dinov3_skip"])
def test_reference_models_equal_pytorch_and_the_authors(name, filled_model, golden, tmp_path):
    """ViT-B DINOv2 / DINOv3 SkipClick with ``fill.py`` weights exported at 224: onnxruntime's
    logits equal PyTorch's within 1e-4 and the authors' within the fixtures' 3e-5, for the
    golden clicks and the second click's point set."""
    model = filled_model(name)
    export_model(model, tmp_path, size=(224, 224))
    onnx_model = OnnxModel(tmp_path)
    inputs = golden("inputs")
    image, prev = inputs["s224.image"], inputs["s224.prev_mask"]
    features = onnx_model.encode(image=image)
    for key in ("s224.points", "s224.points_click2"):
        logits = onnx_model.decode(**features, points=inputs[key], prev_mask=prev)["logits"]
        np.testing.assert_allclose(logits, _torch_logits(model, image, inputs[key], prev), rtol=0, atol=ATOL)
    logits = onnx_model.decode(**features, points=inputs["s224.points"], prev_mask=prev)["logits"]
    np.testing.assert_allclose(logits, golden(name)["s224.fwd.logits"], rtol=0, atol=3e-5)


@pytest.mark.slow
def test_authors_checkpoint_exports(tmp_path, capsys):
    """The authors' checkpoint format goes through the command (variant and checksum recorded)."""
    path = reference_file("official_format_skip.pth")
    assert export_main(["--checkpoint", str(path), "--out", str(tmp_path), "--size", "224", "224"]) == 0
    meta = read_meta(tmp_path)
    assert meta["variant"] == "skipclick" and meta["size"] == [224, 224]
    assert meta["source_sha256"] == file_sha256(path)
    assert "SkipClick skipclick at 224x224" in capsys.readouterr().out


def test_app_serves_an_export_folder(exported, tiny_model):
    """``skipclick-app --checkpoint DIR``: the backend of an export predicts as the model's at the
    export size, and refines a saved mask the same way."""
    from isegm.app.backend import PreparedImage, load_backend, mask_state, model_backend
    folder, _ = exported
    image = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    clicks = [Click(True, (30.0, 40.0)), Click(False, (10.0, 80.0))]
    saved = np.zeros((70, 90), bool)
    saved[20:50, 20:60] = True
    probs = []
    for backend in (load_backend(str(folder), torch.device("cpu")),
                    model_backend(tiny_model, torch.device("cpu"), size=TINY_SIZE)):
        entry = PreparedImage("x.png", (70, 90), (70, 90), predictor=backend.make_predictor())
        entry.predictor.set_input_image(image)
        entry.initial_state = entry.predictor.get_states()
        fresh, _ = backend.predict(entry, clicks, entry.initial_state)
        refined, _ = backend.predict(entry, clicks[:1], mask_state(entry, saved))
        probs.append((fresh, refined))
    (onnx_fresh, onnx_refined), (torch_fresh, torch_refined) = probs
    np.testing.assert_allclose(onnx_fresh, torch_fresh, atol=ATOL)
    np.testing.assert_allclose(onnx_refined, torch_refined, atol=ATOL)
    with pytest.raises(ValueError, match="ONNX export"):
        load_backend(str(folder), torch.device("cpu"), size=224)

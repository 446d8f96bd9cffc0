"""The RClicks benchmark protocol (``isegm.inference.rclicks``): slice thresholds and the drawn
pixel on hand-made maps, reproducible draws, the fallback to the baseline click, the metrics on
a hand-made NoC table, the loop with batches, shards and resume, clickability plug-ins, and
``evaluate_model.py --clicker rclicks`` / ``make_tables.py --rclicks`` end to end. The baseline
strategy still gives the protocol golden's clicks."""
from __future__ import annotations

import json
from typing import List

import numpy as np
import pytest

from isegm.data import FirstSamples
from isegm.inference.clicker import Clicker
from isegm.inference.evaluation import DatasetResult, InstanceResult, baseline_clicker, merge_results, run_dataset
from isegm.inference.rclicks import (Clickability, MapFolder, ProtocolRun, RClicksClickers, RClicksSampler,
                                     benchmark_table, clicker_factory, clickability_tag, dt_clickability,
                                     evaluate_rclicks, group_bounds, iou_at_20, load_clickability, noc_statistics,
                                     protocol_name, protocol_runs, robustness_metrics, sample_from_slice,
                                     slice_thresholds, uniform_clickability)

from conftest import eval_golden
from test_evaluation import BatchRowsPredictor, Squares
from test_evaluate_script import evaluate, load_script, setup  # noqa: F401  (setup is a fixture)
from test_make_tables import make_tables
from test_protocol import SyntheticPredictor, dataset as golden_dataset


class FixedRandom:
    """A stand-in generator whose ``random()`` is ``u``: the drawn pixel can be checked by hand."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


# Row-major positive weights 1, 2, 3, 4 (cumulative 1, 3, 6, 10); zeros are never candidates.
WEIGHTS = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.float32)


@pytest.mark.parametrize("lo,hi,expected", [
    (0.0, 0.1, (1, 2)),   # c >= 0 first at 1; c > 1 first at value 2 (c = 1 is not past 10 %)
    (0.1, 0.2, (1, 2)),
    (0.5, 0.6, (3, 4)),   # c >= 5 first at value 3 (c = 6); c > 6 first at value 4
    (0.9, 1.0, (4, 4)),   # c > 10 never: the last value
    (0.0, 1.0, (1, 4)),
])
def test_slice_thresholds_by_hand(lo, hi, expected):
    assert slice_thresholds(WEIGHTS[WEIGHTS > 0], lo, hi) == expected
    # Zeros do not move the thresholds (RClicks sorts the whole map, zeros included).
    assert slice_thresholds(WEIGHTS, lo, hi)[1] == expected[1]


@pytest.mark.parametrize("lo,hi,u,pixel", [
    (0.0, 1.0, 0.0, (0, 1)),     # u * 10 = 0: the first cumulative weight above it is 1, pixel (0, 1)
    (0.0, 1.0, 0.35, (1, 0)),    # 3.5: cumulative 1, 3, 6 -> the third candidate, weight 3 at (1, 0)
    (0.0, 1.0, 0.999, (1, 1)),
    (0.0, 0.1, 0.5, (0, 2)),     # slice {1, 2}: 0.5 * 3 = 1.5 -> weight 2 at (0, 2)
    (0.9, 1.0, 0.0, (1, 1)),     # slice {4}
    (0.5, 0.6, 0.4, (1, 0)),     # slice {3, 4}, cumulative 3, 7: 0.4 * 7 = 2.8 -> weight 3 at (1, 0)
    (0.5, 0.6, 0.5, (1, 1)),     # 0.5 * 7 = 3.5 is past 3 -> weight 4 at (1, 1)
])
def test_sampled_pixel_by_hand(lo, hi, u, pixel):
    assert sample_from_slice(WEIGHTS, lo, hi, FixedRandom(u)) == pixel


def test_draws_follow_the_weights():
    rng = np.random.default_rng(0)
    draws = [sample_from_slice(WEIGHTS, 0.0, 1.0, rng) for _ in range(4000)]
    freq = {p: draws.count(p) / len(draws) for p in [(0, 1), (0, 2), (1, 0), (1, 1)]}
    assert set(draws) == set(freq)
    np.testing.assert_allclose([freq[p] for p in [(0, 1), (0, 2), (1, 0), (1, 1)]], [0.1, 0.2, 0.3, 0.4], atol=0.03)


def test_empty_map_gives_no_pixel():
    assert sample_from_slice(np.zeros((3, 3)), 0.0, 0.1, FixedRandom(0.5)) is None


def test_groups_are_equal_mass_slices_and_runs_are_labelled():
    assert group_bounds(10)[0] == (0.0, 0.1) and group_bounds(10)[9] == (0.9, 1.0)
    assert [r.label for r in protocol_runs(3)] == ["baseline", "G1", "G2", "G3"]
    runs = protocol_runs(2, seeds=2)
    assert [(r.label, r.group, r.seed) for r in runs] == [("baseline", None, 0), ("G1s0", 1, 0), ("G1s1", 1, 1),
                                                          ("G2s0", 2, 0), ("G2s1", 2, 1)]
    assert clicker_factory(runs[0], load_clickability("dt")) is baseline_clicker


def square_gt(size: int = 21, lo: int = 5, hi: int = 16) -> np.ndarray:
    gt = np.zeros((size, size), dtype=np.int32)
    gt[lo:hi, lo:hi] = 1
    return gt


def test_dt_and_uniform_clickability():
    error = square_gt(9, 2, 7) == 1
    dt = dt_clickability(None, error, error)
    assert dt.max() == 1.0 and dt[4, 4] == 1.0 and dt[2, 2] == pytest.approx(1 / 3)
    assert (uniform_clickability(None, error, error) == error).all()
    # Uniform: every value alike, so every group keeps the whole error region.
    for lo, hi in group_bounds(10):
        assert slice_thresholds(error[error].astype(float), lo, hi) == (1.0, 1.0)


def test_sampler_is_deterministic_per_instance_group_and_click():
    gt = square_gt()
    factory = RClicksClickers(load_clickability("dt"), ProtocolRun("G3", 3, 0, 0.2, 0.3))
    empty = np.zeros(gt.shape, dtype=bool)

    def trajectory(sample_index: int, run: ProtocolRun = factory.run) -> List:
        clicker = RClicksClickers(load_clickability("dt"), run)(None, gt, sample_index, 0)
        return [clicker.make_next_click(empty).coords for _ in range(6)]

    assert trajectory(0) == trajectory(0)
    assert trajectory(0) != trajectory(1)
    assert trajectory(0) != trajectory(0, ProtocolRun("G3s1", 3, 1, 0.2, 0.3))
    # Several clicks on an unchanged mask: each is drawn anew and never lands on a clicked pixel.
    assert len(set(trajectory(0))) == 6


def test_low_and_high_groups_click_where_the_map_says():
    gt = square_gt()
    empty = np.zeros(gt.shape, dtype=bool)
    dt = dt_clickability(None, gt == 1, gt == 1)
    first = {}
    for group, (lo, hi) in [(1, (0.0, 0.1)), (10, (0.9, 1.0))]:
        clickers = RClicksClickers(load_clickability("dt"), ProtocolRun(f"G{group}", group, 0, lo, hi))
        first[group] = [dt[clickers(None, gt, i, 0).make_next_click(empty).coords] for i in range(20)]
    assert max(first[1]) < min(first[10])   # G1 near the edge of the error, G10 near its centre
    assert min(first[10]) >= 4 / 6


def test_fallback_to_the_baseline_click():
    gt = square_gt()
    pred = np.zeros(gt.shape, dtype=bool)
    pred[5:16, 5:15] = True   # one missed column: a false-negative strip
    # A map that is zero on the error: nothing to draw from.
    zero = Clickability("zero", lambda image, gt_mask, error: np.zeros(error.shape, np.float32))
    clicker = RClicksClickers(zero, ProtocolRun("G1", 1, 0, 0.0, 0.1))(None, gt, 0, 0)
    assert clicker.make_next_click(pred) == Clicker(gt_mask=gt).make_next_click(pred)
    # No error at all: the baseline's degenerate negative click at (0, 0).
    dt = RClicksClickers(load_clickability("dt"), ProtocolRun("G1", 1, 0, 0.0, 0.1))(None, gt, 0, 0)
    click = dt.make_next_click(gt == 1)
    assert click.coords == (0, 0) and not click.is_positive
    # Every error pixel clicked already: the candidate map is empty, the baseline click is used.
    sampler = RClicksSampler(lambda error: error.astype(np.float32), 0.0, 1.0, (0,))
    error = np.zeros((4, 4), dtype=bool)
    error[1, 1:3] = True
    not_clicked = ~error
    assert sampler(error, not_clicked, 0) is None


def test_the_sign_is_the_baseline_rule():
    gt = square_gt()
    pred = np.zeros(gt.shape, dtype=bool)
    pred[5:16, 5:16] = True
    pred[0:3, 0:10] = True   # a false-positive band larger than any false negative
    rclicks = RClicksClickers(load_clickability("uniform"), ProtocolRun("G5", 5, 0, 0.4, 0.5))(None, gt, 0, 0)
    click = rclicks.make_next_click(pred)
    assert not click.is_positive and pred[click.coords] and gt[click.coords] == 0


def test_bad_clickability_maps_are_named():
    gt = square_gt()
    empty = np.zeros(gt.shape, dtype=bool)
    for fn, message in [(lambda i, g, e: np.zeros((3, 3)), r"shape \(3, 3\)"),
                        (lambda i, g, e: -np.ones(e.shape), "negative"),
                        (lambda i, g, e: np.full(e.shape, np.nan), "NaN")]:
        clicker = RClicksClickers(Clickability("mine", fn), ProtocolRun("G1", 1, 0, 0.0, 0.1))(None, gt, 0, 0)
        with pytest.raises(ValueError, match=f"'mine'.*{message}|{message}.*'mine'"):
            clicker.make_next_click(empty)
    with pytest.raises(ValueError, match="0 <= lo < hi <= 1"):
        RClicksSampler(lambda e: e, 0.5, 0.5, (0,))


def test_noc_statistics_on_a_hand_made_table():
    base = [2, 4]
    groups = [[4, 6], [3, 5], [2, 4], [2, 4]]   # G1 .. G4, two instances
    stats = noc_statistics(np.array(base), np.array(groups))
    # Per instance: means 2.75 and 4.75; population std over groups sqrt(2.75 / 4) for both.
    assert stats["sample_noc"] == pytest.approx(3.75)
    assert stats["sample_noc_std"] == pytest.approx(np.sqrt(0.6875))
    assert stats["base_noc"] == 3.0
    assert stats["delta_sb_pct"] == pytest.approx(100 * (0.75 / 2 + 0.75 / 4) / 2)          # 28.125
    assert stats["delta_gr_pct"] == pytest.approx(100 * ((4 - 2) / 2 + (6 - 4) / 4) / 2)    # 75
    assert stats["delta_hh_pct"] == pytest.approx(100 * (1 + 0.5 + 0.5 + 0.25) / 4)        # G1 vs G3, G2 vs G4: 56.25
    assert stats["group_noc"] == [5.0, 4.0, 3.0, 3.0]
    assert noc_statistics(np.array(base), np.array(groups[:3]))["delta_hh_pct"] is None
    with pytest.raises(ValueError, match="group_noc"):
        noc_statistics(np.array(base), np.array([1, 2]))


def test_iou_at_20_is_the_normalised_area():
    assert iou_at_20(np.array([0.5, 1.0, 1.0]), 3) == pytest.approx(((0.5 + 1) / 2 + 1) / 2)
    assert iou_at_20(np.array([0.5, 1.0]), 3) == pytest.approx(0.875)   # stopped early: keeps its last IoU
    assert iou_at_20(np.linspace(0, 1, 20, dtype=np.float32)) == pytest.approx(0.5)


def result(*ious_per_instance) -> DatasetResult:
    return DatasetResult([InstanceResult(i, 0, np.array(ious, dtype=np.float32), [], 0.0)
                          for i, ious in enumerate(ious_per_instance)])


def test_robustness_metrics_from_runs_average_the_seeds():
    runs = protocol_runs(2, seeds=2)
    # IoUs reaching 0.9 at click 1, 2, 3, or never (NoC 3, the limit).
    reach = {1: [0.95, 0.95, 0.95], 2: [0.5, 0.95, 0.95], 3: [0.5, 0.5, 0.95], 4: [0.5, 0.5, 0.5]}
    results = {"baseline": result(reach[1], reach[2]),
               "G1s0": result(reach[3], reach[4]), "G1s1": result(reach[2], reach[4]),
               "G2s0": result(reach[1], reach[2]), "G2s1": result(reach[1], reach[2])}
    m = robustness_metrics(results, runs, 0.9, max_clicks=3)
    # NoC per instance: baseline (1, 2); G1 (2.5, 3) as the mean of two seeds; G2 (1, 2).
    assert [i["group_noc"] for i in m["instances"]] == [[2.5, 1.0], [3.0, 2.0]]
    assert m["sample_noc"] == pytest.approx((1.75 + 2.5) / 2)
    assert m["delta_gr_pct"] == pytest.approx(100 * (1.5 + 0.5) / 2)
    assert m["base_nof"] == 0 and m["group_nof"] == [1.5, 0.0]   # instance 2 of G1 is at the limit in both seeds
    assert m["iou20_exact"] and m["n_instances"] == 2 and m["seeds"] == 2
    results["G2s1"] = result(reach[1])
    with pytest.raises(ValueError, match="G2s1"):
        robustness_metrics(results, runs, 0.9, max_clicks=3)


def test_loop_batches_and_shards_keep_the_rclicks_clicks():
    """The draws depend only on (seed, sample, object, group, click): one at a time, batched,
    sharded and resumed runs click the same pixels."""
    dataset = Squares(n=5)
    factory = RClicksClickers(load_clickability("dt"), ProtocolRun("G2", 2, 0, 0.1, 0.2))
    one = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, clicker_factory=factory)
    base = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99)
    assert [r.clicks for r in one.instances] != [r.clicks for r in base.instances]
    batched = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, clicker_factory=factory, batch_size=3)
    shards = merge_results([run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, clicker_factory=factory,
                                        shard=(rank, 2)) for rank in range(2)])
    done = {(r.sample_index, r.object_id): r for r in one.instances[:4]}
    resumed = run_dataset(dataset, BatchRowsPredictor(), max_iou_thr=0.99, clicker_factory=factory, done=done)
    for other in (batched, shards, resumed):
        assert [(r.sample_index, r.object_id, r.clicks) for r in other.instances] == \
            [(r.sample_index, r.object_id, r.clicks) for r in one.instances]


def test_baseline_run_of_the_protocol_equals_the_golden():
    """``evaluate_rclicks``' baseline run is the protocol's clicker: the golden's clicks and IoUs."""
    instances = eval_golden("protocol_golden.json")["datasets"]["GrabCut"]["instances"][:4]
    results = evaluate_rclicks(FirstSamples(golden_dataset("GrabCut"), 4), SyntheticPredictor(),
                               load_clickability("dt"), n_groups=2, max_iou_thr=0.95)
    assert list(results) == ["baseline", "G1", "G2"]
    for instance, r in zip(instances, results["baseline"].instances):
        n = instance["n_clicks_early_stop"]
        assert [[y, x, int(p)] for y, x, p in r.clicks] == instance["clicks"][:n]
        np.testing.assert_array_equal(r.ious, np.array(instance["ious"][:n], dtype=np.float32))
    assert [r.clicks for r in results["G1"].instances] != [r.clicks for r in results["baseline"].instances]


def test_clickability_plugins(tmp_path):
    plugin = tmp_path / "my_clicks.py"
    plugin.write_text("import numpy as np\n\ndef centre(image, gt_mask, error_mask):\n"
                      "    return error_mask.astype(np.float32)\n")
    loaded = load_clickability(f"{plugin}:centre")
    assert loaded.name == "my_clicks:centre" and clickability_tag(loaded.name) == "my_clicks-centre"
    assert protocol_name(loaded) == "RClicks protocol with my_clicks:centre clickability"
    assert protocol_name(load_clickability("dt")) == "RClicks protocol with DT clickability"
    assert load_clickability("numpy:ones_like").name == "numpy:ones_like"
    with pytest.raises(ValueError, match="no callable 'missing'"):
        load_clickability(f"{plugin}:missing")
    with pytest.raises(ValueError, match="expected dt, uniform"):
        load_clickability("saliency")
    # A folder of precomputed maps, per dataset: <folder>/<dataset>/<sample>_<object>.npy (or .png).
    (tmp_path / "maps" / "Squares").mkdir(parents=True)
    np.save(tmp_path / "maps" / "Squares" / "0_1.npy", np.ones((40, 40), np.float32))
    folder = load_clickability(str(tmp_path / "maps"), "Squares")
    assert isinstance(folder, MapFolder) and folder.folder == tmp_path / "maps" / "Squares"
    gt = Squares().get_sample(0).gt_mask(1) == 1
    assert folder.for_instance(None, gt, 0, 1)(gt).shape == (40, 40)
    with pytest.raises(FileNotFoundError, match="0_0.npy"):
        folder.for_instance(None, gt, 0, 0)
    with pytest.raises(ValueError, match=r"shape \(40, 40\).*\(5, 5\)"):
        folder.for_instance(None, np.zeros((5, 5), bool), 0, 1)


def test_benchmark_table_layout():
    metrics = {"n_instances": 2, "iou_thr": 0.9, "max_clicks": 20, "sample_noc": 3.75, "sample_noc_std": 0.829,
               "delta_sb_pct": 28.125, "delta_gr_pct": 75.0}
    text = benchmark_table([("GrabCut (OpenCV)", {"GrabCut": metrics})], ["GrabCut", "DAVIS"]).splitlines()
    assert text[0] == ("| Method | GrabCut Sample NoC@90 | GrabCut ΔSB, % | GrabCut ΔGR, % | DAVIS Sample NoC@90 | "
                       "DAVIS ΔSB, % | DAVIS ΔGR, % |")
    assert text[2] == "| GrabCut (OpenCV) | 3.75 ± 0.83 | 28.12 | 75.00 | – | – | – |"


@pytest.mark.slow
def test_script_runs_the_protocol_and_make_tables_combines_it(setup, capsys, tmp_path):  # noqa: F811
    logs = setup / "rclicks"
    args = ("--logs-path", str(logs), "--clicker", "rclicks", "--groups", "2", "--clickability", "uniform")
    assert evaluate(setup, *args) == 0
    out = capsys.readouterr().out
    folder = logs / "others" / "tiny"
    data = json.loads((folder / "rclicks_uniform_fixed56_NoBRS_3.json").read_text())
    grabcut = data["datasets"]["GrabCut"]
    assert data["protocol"] == "RClicks protocol with uniform clickability"
    assert grabcut["n_instances"] == 3 and len(grabcut["group_noc"]) == 2 and grabcut["max_clicks"] == 3
    assert "| tiny | " in out and (folder / "rclicks_uniform_fixed56_NoBRS_3.md").read_text() in out
    assert (folder / "plots" / "rclicks_uniform_fixed56_NoBRS_3.png").read_bytes()[:4] == b"\x89PNG"
    records = sorted(p.name for p in (folder / "instances").iterdir())
    assert records == [f"GrabCut_fixed56_NoBRS_3_rclicks_uniform_{r}.jsonl" for r in ("G1", "G2", "baseline")]
    # Batched and resumed runs give the same numbers.
    assert evaluate(setup, *args[2:], "--logs-path", str(setup / "rc_batched"), "--batch-size", "3") == 0
    name = "rclicks_uniform_fixed56_NoBRS_3.json"
    batched = json.loads((setup / "rc_batched" / "others" / "tiny" / name).read_text())
    assert batched["datasets"]["GrabCut"]["instances"] == grabcut["instances"]
    assert evaluate(setup, *args, "--resume") == 0
    assert json.loads((folder / name).read_text())["datasets"]["GrabCut"]["instances"] == grabcut["instances"]
    capsys.readouterr()
    # make_tables: the benchmark table of the JSON, and the plot.
    code = make_tables.main([str(folder / name), "--rclicks", "--labels", "tiny model",
                             "--group-plot", str(tmp_path / "groups.png")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0] == "### RClicks protocol with uniform clickability"
    assert out[4].startswith("| tiny model | ") and (tmp_path / "groups.png").is_file()


def test_script_flags():
    parse = load_script().parse_args
    args = parse(["NoBRS", "--baseline", "grabcut", "--clicker", "rclicks", "--clickability", "uniform",
                  "--seeds", "2"])
    assert (args.clicker, args.clickability, args.groups, args.seeds) == ("rclicks", "uniform", 10, 2)
    for bad in (["--target-iou", "0.85"], ["--groups", "1"], ["--clickability", "saliency"], ["--save-ious"]):
        with pytest.raises(SystemExit):
            parse(["NoBRS", "--baseline", "grabcut", "--clicker", "rclicks", *bad])


def test_make_tables_rclicks_rejects_plain_results(tmp_path, capsys):
    plain = tmp_path / "results.json"
    plain.write_text(json.dumps({"model": "m", "datasets": {"GrabCut": {"n_instances": 3, "noc": {}, "over_max": {}}}}))
    assert make_tables.main([str(plain), "--rclicks"]) == 2
    assert "not an rclicks_*.json" in capsys.readouterr().err

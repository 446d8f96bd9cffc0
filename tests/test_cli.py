"""The console commands: setup.py's entry points, one device vocabulary, every option's help
showing its default, the clone's scripts calling the package's commands, one-line errors."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import os
import subprocess
import sys
from typing import Dict

import pytest

from conftest import REPO, shared_path
from isegm.app.__main__ import parse_args as app_args
from isegm.cli import console, evaluate, tables, train
from isegm.cli.common import CommandError, HelpFormatter, exit_error, main_entry

COMMANDS = {"skipclick-train": "isegm.cli.train:main", "skipclick-evaluate": "isegm.cli.evaluate:main",
            "skipclick-tables": "isegm.cli.tables:main", "skipclick-app": "isegm.app.__main__:main",
            "skipclick-export": "isegm.cli.export:main", "skipclick-weights": "isegm.cli.weights:main",
            "skipclick-label-studio": "isegm.label_studio.__main__:main"}


def console_scripts() -> Dict[str, str]:
    """setup.py's console_scripts, read from its source (nothing is built or installed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    return dict(tuple(part.strip() for part in line.split("=")) for line in entry_points["console_scripts"])


def test_setup_declares_every_command_and_each_runs_its_main_through_main_entry():
    scripts = console_scripts()
    assert set(scripts) == set(COMMANDS)
    for command, target in scripts.items():
        module, _, function = target.partition(":")
        assert module == "isegm.cli.console", target
        source = inspect.getsource(getattr(console, function))
        main_module, _, main = COMMANDS[command].partition(":")
        assert f"{main_module.rsplit('.', 1)[1]} import {main}" in source and "main_entry(main)" in source, source
        if (REPO / (main_module.replace(".", "/") + ".py")).is_file():
            assert callable(getattr(__import__(main_module, fromlist=[main]), main)), target


def benchmark(name: str):
    """A benchmark script of ``scripts/`` as a module (its folder on the path, as when run)."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.append(str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCHMARKS = ("benchmark_app", "benchmark_eval", "benchmark_latency", "benchmark_train")


def test_setup_reads_the_one_version_without_importing_the_package():
    import isegm
    source = (REPO / "setup.py").read_text()
    assert "import isegm" not in source and "exec(" not in source
    line = next(l for l in (REPO / "isegm" / "__init__.py").read_text().splitlines() if l.startswith("__version__"))
    assert line == f'__version__ = "{isegm.__version__}"'


def parsers() -> Dict[str, argparse.ArgumentParser]:
    """Each command's and benchmark's parser, caught as it parses --help."""
    parses = {"skipclick-train": train.parse_args, "skipclick-evaluate": evaluate.parse_args,
              "skipclick-tables": tables.parse_args, "skipclick-app": app_args,
              **{name: benchmark(name).parse_args for name in BENCHMARKS}}
    found = {}
    real = argparse.ArgumentParser.parse_args

    def catch(self, args=None, namespace=None):
        found[name] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = catch
    try:
        for name, parse in parses.items():
            with pytest.raises(SystemExit):
                parse(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = real
    return found


def test_every_option_has_help_that_shows_its_default():
    found = parsers()
    assert len(found) == 4 + len(BENCHMARKS)
    missing = []
    for prog, parser in found.items():
        assert isinstance(parser.formatter_class(prog), HelpFormatter), prog
        text = parser.format_help()
        required = {id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{prog} {action.dest}: no help")
            if action.required or id(action) in required:
                continue
            shown = parser.formatter_class(prog)._get_help_string(action)
            if action.option_strings and action.nargs != 0 and action.default in (None, "", []):
                # the help says in words what happens without the option
                if not any(w in shown for w in ("default", "no effect", "alias of")):
                    missing.append(f"{prog} {action.dest}: {shown!r} does not say what happens without it")
            elif action.option_strings and action.default not in (None, False, "", []) and "default" not in shown:
                missing.append(f"{prog} {action.dest}: default not shown")
        assert "(default: %(default)s)" not in text
    assert not missing, "\n".join(missing)


def test_device_vocabulary_on_every_computing_command():
    for prog, parser in parsers().items():
        options = {o for action in parser._actions for o in action.option_strings}
        if prog == "skipclick-tables":   # it only reads JSON files
            assert not options & {"--device", "--dtype"}
            continue
        assert {"--device", "--dtype"} <= options, prog
        if prog in ("skipclick-train", "skipclick-evaluate"):
            assert {"--gpus", "--cpu"} <= options, prog


def test_train_flags(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text("def main(cfg):\n    pass\n")
    args = train.parse_args([str(model_file), "--bf16", "--gpus", "1", "--config-path", "c.yml"])
    assert (args.dtype, args.gpus, args.config, args.device) == ("bf16", "1", "c.yml", None)
    assert train.parse_args([str(model_file)]).dtype == "fp32"
    with pytest.raises(SystemExit):
        train.parse_args([str(model_file), "--dtype", "fp16"])


def test_train_settings_give_the_model_file_its_device_and_precision(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text("def main(cfg):\n    pass\n")
    cfg = train.settings(train.parse_args([str(model_file), "--cpu", "--bf16"]), {"EXPS_PATH": "x"})
    assert (cfg["device"], cfg["bf16"], cfg["EXPS_PATH"], cfg["world_size"]) == ("cpu", True, "x", 1)


def test_train_stops_on_a_missing_config_with_one_line(tmp_path, capsys):
    model_file = tmp_path / "m.py"
    model_file.write_text("def main(cfg):\n    pass\n")
    with pytest.raises(CommandError) as stop:
        train.main([str(model_file), "--cpu", "--config", str(tmp_path / "none.yml")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "none.yml" in err and "none.yml" in str(stop.value)


def test_exit_error_is_status_2_and_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        exit_error("--device tpu: expected cpu, cuda, cuda:N or mps")
    assert stop.value.code == 2 and capsys.readouterr().err == "error: --device tpu: expected cpu, cuda, cuda:N or mps\n"


def test_app_device_default_is_the_machines():
    args = app_args(["--images", "i", "--out", "o"])
    assert (args.device, args.dtype) == (None, "fp32")


@pytest.mark.parametrize("script, prog", [("train.py", "skipclick-train"),
                                          ("scripts/evaluate_model.py", "skipclick-evaluate"),
                                          ("scripts/make_tables.py", "skipclick-tables")])
def test_clone_scripts_run_the_commands_from_any_folder(script, prog, tmp_path):
    """``python train.py`` etc. work in a clone whether or not the package is installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {prog}")


def entry_status(main, argv, capsys, monkeypatch, debug_env=""):
    """Exit status and stderr lines of ``main_entry(main, argv)``."""
    monkeypatch.setenv("SKIPCLICK_DEBUG", debug_env)
    with pytest.raises(SystemExit) as stop:
        main_entry(main, argv)
    return stop.value.code, capsys.readouterr().err.splitlines()


def test_main_entry_gives_one_line_and_status_2_for_errors_meant_for_the_user(capsys, monkeypatch):
    def missing(argv):
        open("/nonexistent/file.json")

    def bad_value(argv):
        raise ValueError("--size 13: expected a multiple of 14\n(second line)")

    def stops(argv):
        exit_error("--opset 3: the graphs need opset 17 or later")

    code, err = entry_status(missing, [], capsys, monkeypatch)
    assert (code, err) == (2, ["error: [Errno 2] No such file or directory: '/nonexistent/file.json'"])
    code, err = entry_status(bad_value, [], capsys, monkeypatch)
    assert (code, err) == (2, ["error: --size 13: expected a multiple of 14 (second line)"])
    code, err = entry_status(stops, [], capsys, monkeypatch)
    assert (code, err) == (2, ["error: --opset 3: the graphs need opset 17 or later"])
    assert entry_status(lambda argv: None, [], capsys, monkeypatch) == (0, [])
    assert entry_status(lambda argv: 1, [], capsys, monkeypatch) == (1, [])


def test_main_entry_names_an_unexpected_error_and_how_to_see_its_traceback(capsys, monkeypatch):
    def defect(argv):
        raise KeyError("state_dict")

    code, err = entry_status(defect, ["x"], capsys, monkeypatch)
    assert (code, err) == (1, ["error: KeyError: 'state_dict'; run again with --debug for the traceback"])
    for argv, env in ((["x", "--debug"], ""), (["x"], "1")):
        code, err = entry_status(defect, argv, capsys, monkeypatch, env)
        assert code == 1 and err[0] == "Traceback (most recent call last):" and err[-1] == "error: KeyError: 'state_dict'"
    code, err = entry_status(defect, ["--", "--debug"], capsys, monkeypatch)   # an operand, not the option
    assert len(err) == 1


def test_the_commands_accept_debug():
    from isegm.cli import export, weights
    found = parsers()
    assert "--debug" in found["skipclick-train"].format_help() and "--debug" in found["skipclick-tables"].format_help()
    assert export.build_parser().parse_args(["--checkpoint", "c", "--out", "o", "--debug"]).debug
    for argv in (["--debug", "list"], ["list", "--debug"], ["check", "--debug"]):
        weights.build_parser().parse_args(argv)


@pytest.mark.parametrize("script, args", [
    ("train.py", ["models/quickstart/tiny.py", "--cpu", "--workers", "0", "--exp-name", "x", "--weights"]),
    ("scripts/evaluate_model.py", ["NoBRS", "--datasets", "GrabCut", "--cpu", "--checkpoint"]),
])
def test_clone_scripts_report_a_damaged_checkpoint_in_one_line(script, args, tmp_path):
    """The clone's scripts run through main_entry: one ``error:`` line naming the file, status 2;
    ``SKIPCLICK_DEBUG=1`` adds the traceback."""
    damaged = tmp_path / "cut.pth"
    damaged.write_bytes(b"PK\x03\x04" + bytes(100))
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "SKIPCLICK_DEBUG": "",
           "SKIPCLICK_EXPS_PATH": str(tmp_path / "exps")}
    if script.endswith("evaluate_model.py"):   # it checks the dataset folders first
        env["SKIPCLICK_GRABCUT_PATH"] = str(shared_path("datasets", "GrabCut"))
    command = [sys.executable, str(REPO / script), *[str(REPO / a) if a.endswith(".py") else a for a in args],
               str(damaged)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"error: {str(damaged)!r}: the file is cut short")
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**env, "SKIPCLICK_DEBUG": "1"},
                          timeout=300)
    assert done.returncode == 2 and "Traceback (most recent call last)" in done.stderr, done.stderr[-3000:]

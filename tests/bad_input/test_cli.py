"""Bad command lines: every flag of every ``gaussport`` command, with bad values generated from the parser.

``gaussport.cli.build_parser()`` declares what each flag accepts: its type (a range with
``Integer``/``Number``, a role with ``Directory``, a ``Device``, a ``SolverName``; see
``gaussport.demo._arguments``), its ``choices``, ``nargs``, ``required`` and the switches
(``store_true``). This file walks the parser's commands and their actions and makes the bad values
from those declarations, so a new flag is covered as soon as it exists, and a flag that declares
nothing fails :func:`test_every_flag_declares_what_it_accepts`. The checks that need several flags
at once (digits-only options with ``--target mixture``, seeds past 2**64, grids too short for the
truncated teleport, a model without the classifier the Frechet distance needs) are generated from
``cli.DIGITS_ONLY`` and a short list.

Every case must (docs/conventions.md#bad-input): return exit status 2 from ``gaussport.cli.main``,
print exactly one line ``gaussport COMMAND: error: ...`` on stderr and nothing on stdout, start no
work (tripwires on loading the digits model, building the mixture target and training) and write
nothing (the working directory is unchanged, an earlier output file byte for byte).

Cases: ``len(CASES)`` generated command lines plus ``INTEGER_EXAMPLES`` hypothesis examples, and
``len(LIBRARY_CASES)`` calls of the demo's Python functions (``rejected``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from _rules import digest, rejected, unchanged_after_failure
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gaussport.demo.mixture_demo
import gaussport.digits
import gaussport.digits.train
from gaussport import cli, demo
from gaussport.analytic import Gaussian
from gaussport.demo._arguments import (
    DataPath,
    Device,
    Directory,
    InputFile,
    Integer,
    Number,
    OutputFile,
    SolverName,
)
from gaussport.digits.files import DENOISER_FILE, GAUSSIAN_FILE
from gaussport.digits.train import train_digits

PARSER = cli.build_parser()
COMMANDS: dict[str, argparse.ArgumentParser] = next(
    a.choices for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)
)
SKIPPED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
ROOT_ONLY = os.geteuid() == 0 if hasattr(os, "geteuid") else False  # root writes anywhere

# Placeholders, filled in per test: {file} an existing file, {missing} a free path, {empty} an empty
# directory, {model} a directory with a denoiser and statistics but no classifier, {readonly} a
# directory without write permission, {dangling} a link to nowhere, {out} the output directory,
# {images} a folder of two 8x8 PNGs, {stats} a statistics file, {mixed} a folder of two image sizes,
# {foreign} a .safetensors file that is no statistics file.
PLACES = (
    "file",
    "missing",
    "empty",
    "model",
    "readonly",
    "dangling",
    "out",
    "images",
    "stats",
    "mixed",
    "foreign",
)


def _flag(action: argparse.Action) -> str:
    """The flag's longest name, or the metavar of a positional argument."""
    return (
        max(action.option_strings, key=len) if action.option_strings else str(action.metavar or action.dest)
    )


def _words(action: argparse.Action, value: str) -> list[str]:
    """``value`` given to ``action``: ``--flag=value``, or the value alone for a positional."""
    return [f"{_flag(action)}={value}"] if action.option_strings else [value]


def _base(command: str, action: argparse.Action | None) -> list[str]:
    """The valid words every case of ``command`` starts with: the positionals and required flags
    (other than ``action``) with good values, and a safe ``--out`` for the demo and trainer."""
    words: list[str] = []
    for other in COMMANDS[command]._actions:
        if other is action or isinstance(other, SKIPPED):
            continue
        if not other.option_strings:
            words = [*good_value(other), *words]
        elif other.required:
            words += [_flag(other), *good_value(other)]
    if command in ("demo", "train-demo") and (action is None or _flag(action) != "--out"):
        words += ["--out", "{out}"]
    return words


def bad_values(action: argparse.Action) -> list[tuple[str, list[str], Any]]:
    """``(what, words, marks)``: the bad values of one flag, from what it declares."""
    flag, kind = _flag(action), action.type
    if isinstance(action, argparse._StoreTrueAction):
        return [("a value given to a switch", [f"{flag}=yes"], ())]
    out: list[tuple[str, list[str], Any]] = []
    readonly = pytest.mark.skipif(ROOT_ONLY, reason="root writes")
    if isinstance(kind, Integer):
        low, high = kind.minimum, kind.maximum
        values = [("letters", "abc"), ("a float", "2.5"), ("an exponent", "1e3"), ("empty", "")]
        values += [("below the minimum", str(low - 1)), ("far below", str(low - 1000))]
        values += [("above the maximum", str(high + 1))] if high is not None else []
        out += [(what, _words(action, v), ()) for what, v in values]
    elif isinstance(kind, Number):
        values = ["abc", "", "nan", "inf", "-inf", f"{kind.low!r}", f"{2 * kind.high!r}", "-1"]
        out += [(f"number {v!r}", _words(action, v), ()) for v in values]
    elif isinstance(kind, DataPath):
        out += [
            (what, _words(action, v), ())
            for what, v in [
                ("missing", "{missing}"),
                ("a file of another kind", "{file}"),
                ("a folder without images", "{empty}"),
                ("empty", ""),
                ("a dangling link", "{dangling}"),
                ("images of two sizes", "{mixed}"),
            ]
        ]
    elif isinstance(kind, InputFile):
        out += [
            (what, _words(action, v), ())
            for what, v in [
                ("missing", "{missing}" + kind.suffixes[0]),
                ("a file of another kind", "{file}"),
                ("a directory", "{empty}"),
                ("empty", ""),
                ("a dangling link", "{dangling}"),
                ("a foreign file", "{foreign}"),
            ]
        ]
    elif isinstance(kind, OutputFile):
        name = "x" + kind.suffixes[0]
        out += [
            (what, [flag, v], marks)
            for what, v, marks in [
                ("a directory", "{empty}", ()),
                ("under a file", "{file}/" + name, ()),
                ("empty", "", ()),
                ("a wrong suffix", "{out}/x.txt", ()),
                ("a dangling link", "{dangling}", ()),
                ("read-only", "{readonly}/" + name, readonly),
            ]
        ]
    elif isinstance(kind, Directory) and kind.role == "output":
        out += [
            ("a file", [flag, "{file}"], ()),
            ("under a file", [flag, "{file}/sub"], ()),
            ("empty", [flag, ""], ()),
            ("a dangling link", [flag, "{dangling}"], ()),
            ("read-only", [flag, "{readonly}/sub"], readonly),
        ]
    elif isinstance(kind, Directory) and kind.role == "model":
        out += [
            ("missing", [flag, "{missing}"], ()),
            ("a file", [flag, "{file}"], ()),
            ("an empty directory", [flag, "{empty}"], ()),
            ("empty", [flag, ""], ()),
        ]
    elif isinstance(kind, Device):
        values = ["bogus", "", "meta", "cuda:99", "cpu:x"]
        if kind.only is not None or not torch.cuda.is_available():
            values.append("cuda")
        out += [(f"device {v!r}", [f"{flag}={v}"], ()) for v in values]
    elif isinstance(kind, SolverName):
        out += [(f"solver {v!r}", [f"{flag}={v}"], ()) for v in ("nope", "", "HEUN", "heun,euler")]
    if action.choices is not None:
        first = next(iter(action.choices))
        values = ["nope", "", first.upper(), f" {first}"]
        out += [(f"choice {v!r}", [f"{flag}={v}"], ()) for v in values]
    if not action.option_strings:  # a positional: its absence is the "required" case
        return out
    if action.nargs == "+":
        out.append(("no value", [flag], ()))
    elif action.nargs is None and not isinstance(action, argparse._StoreTrueAction):
        out.append(("no value", [flag], ()))
    return out


def good_value(action: argparse.Action) -> list[str]:
    """A value the flag accepts on its own (for the checks across flags)."""
    kind = action.type
    if isinstance(kind, Integer):
        value = max(kind.minimum, 2)
    elif isinstance(kind, Number):
        value = kind.high / 2
    elif isinstance(kind, Directory):
        return ["{model}" if kind.role == "model" else "{out}/cache"]
    elif isinstance(kind, Device):
        return ["cpu"]
    elif isinstance(kind, SolverName):
        return ["euler"]
    elif isinstance(kind, DataPath):
        return ["{images}"]
    elif isinstance(kind, InputFile):
        return ["{stats}"]
    elif isinstance(kind, OutputFile):
        return ["{out}/output" + kind.suffixes[0]]
    elif action.choices is not None:
        return [str(list(action.choices)[-1])]
    else:
        return []
    return [str(value)]


def _cases() -> list[Any]:
    cases: list[Any] = []

    def add(label: str, words: list[str], marks: Any = ()) -> None:
        cases.append(pytest.param(words, id=label, marks=marks))

    # The top level: an unknown command, a value given to a switch, a word no command takes.
    for what, words, marks in [("no command", ["nope"], ()), ("empty command", [""], ())]:
        add(f"gaussport {what}", words, marks)
    for action in PARSER._actions:
        if not isinstance(action, SKIPPED):
            for what, words, marks in bad_values(action):
                add(f"gaussport {_flag(action)} {what}", [*words, "solvers"], marks)
    for command, sub in COMMANDS.items():
        add(f"{command} extra word", [command, *_base(command, None), "extra"])
        for action in sub._actions:
            if isinstance(action, SKIPPED):
                continue
            if action.required or not action.option_strings:
                add(f"{command} without {_flag(action)}", [command, *_base(command, action)])
            # The mixture demo takes the demo's flags but the digits-only ones: both targets.
            targets = [[]]
            if command == "demo" and action.dest not in (*cli.DIGITS_ONLY, "target"):
                targets.append(["--target", "mixture"])
            for target in targets:
                for what, words, marks in bad_values(action):
                    where = " (mixture)" if target else ""
                    add(
                        f"{command} {_flag(action)} {what}{where}",
                        [command, *target, *_base(command, action), *words],
                        marks,
                    )
    # Checks across flags.
    demo_flags = {a.dest: a for a in COMMANDS["demo"]._actions}
    for dest in cli.DIGITS_ONLY:
        action = demo_flags[dest]
        add(
            f"demo --target mixture with {_flag(action)}",
            ["demo", "--target", "mixture", "--out", "{out}", _flag(action), *good_value(action)],
        )
    across = [
        ("digits with --steps", ["--steps", "3"]),
        ("--frechet-samples 1", ["--frechet-samples", "1"]),
        ("--frechet-seeds 0 with Frechet samples", ["--frechet-seeds", "0"]),
        ("--seed + --batch past 2**64", ["--seed", str(2**64 - 2), "--batch", "4"]),
        ("--seed + Frechet seeds past 2**64", ["--seed", str(2**64 - 10_001), "--batch", "1"]),
        ("--model without the classifier", ["--model", "{model}"]),
        ("--solver empty list", ["--solver"]),
        ("mixture --steps 1", ["--target", "mixture", "--steps", "1"]),
        ("mixture --steps 2", ["--target", "mixture", "--steps", "6", "2"]),
        ("mixture --sigma-skip 0.0021", ["--target", "mixture", "--sigma-skip", "0.0021", "--steps", "3"]),
    ]
    for label, words in across:
        add(f"demo {label}", ["demo", "--out", "{out}", *words])
    fit = [
        ("--rank with --representation dense", ["--rank", "4", "--representation", "dense"]),
        ("--rank with --representation diagonal", ["--rank", "4", "--representation", "diagonal"]),
        ("--representation lowrank without --rank", ["--representation", "lowrank"]),
    ]
    for label, words in fit:
        add(f"fit {label}", ["fit", *_base("fit", None), *words])
    return cases


CASES = _cases()
INTEGER_EXAMPLES = 40  # the "ci" profile's max_examples


# The work bad input must never reach: loading the digits model, the mixture target, training.
TRIPWIRES = [
    (gaussport.digits, "evaluator"),
    (gaussport.digits, "train_demo_model"),
    (gaussport.demo.mixture_demo, "demo_target"),
    (gaussport.digits.train, "load_sklearn_digits"),
    (Gaussian, "fit"),
]


def _tripwire(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("work started before the bad input was refused")


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The paths the placeholders stand for, in a working directory of their own; tripwires on the work."""
    for owner, name in TRIPWIRES:
        monkeypatch.setattr(owner, name, _tripwire)
    monkeypatch.chdir(tmp_path)  # the demo's default --out is relative
    (tmp_path / "file").write_text("a file, not a directory\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "model").mkdir()
    for name in (DENOISER_FILE, GAUSSIAN_FILE):
        (tmp_path / "model" / name).write_bytes(b"")
    (tmp_path / "readonly").mkdir(mode=0o500)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("an earlier run\n")
    for folder, sizes in (("images", [(8, 8), (8, 8)]), ("mixed", [(8, 8), (6, 8)])):
        (tmp_path / folder).mkdir()
        for k, size in enumerate(sizes):
            Image.new("L", size, color=40 * k).save(tmp_path / folder / f"{k}.png")
    Gaussian.diagonal(torch.zeros(3), torch.ones(3)).save(tmp_path / "stats.safetensors")
    (tmp_path / "foreign.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    places = {name: str(tmp_path / name) for name in PLACES}
    return {
        **places,
        "stats": places["stats"] + ".safetensors",
        "foreign": places["foreign"] + ".safetensors",
    }


def _snapshot(root: Path) -> dict[str, str | None]:
    return {os.fspath(p.relative_to(root)): digest(p) if p.is_file() else None for p in root.rglob("*")}


def refused(words: list[str], places: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line; assert exit status 2, one line on stderr, no work and nothing written."""
    root = Path(places["out"]).parent
    line = [w.format(**places) for w in words]
    before = _snapshot(root)
    start = time.perf_counter()
    code = cli.main(line)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 2, f"{line}: exit status {code}; stderr {err!r}"
    assert err.count("\n") == 1 and err.endswith("\n") and out == "", f"{line}: {err!r} {out!r}"
    prog = f"gaussport {line[0]}" if line[0] in COMMANDS else "gaussport"  # else a top-level error
    assert err.startswith(f"{prog}: error: "), err
    assert len(err.split()) >= 6, f"{line}: a message of a few words that names the fix: {err!r}"
    assert _snapshot(root) == before, f"{line} wrote or changed files"
    assert seconds < 5.0, f"{line}: {seconds:.1f} s to refuse, so work ran first"
    return err


@pytest.mark.parametrize("words", CASES)
def test_bad_command_line_is_one_line_and_exit_2_before_any_work(
    words: list[str], places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    refused(words, places, capsys)


INTEGER_FLAGS = [
    (command, a) for command, sub in COMMANDS.items() for a in sub._actions if isinstance(a.type, Integer)
]


@settings(max_examples=INTEGER_EXAMPLES)
@given(data=st.data())
def test_integer_flags_refuse_generated_values_outside_their_range(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    command, action = data.draw(st.sampled_from(INTEGER_FLAGS), label="flag")
    kind = action.type
    below = st.integers(max_value=kind.minimum - 1).map(str)
    above = st.integers(min_value=kind.maximum + 1).map(str) if kind.maximum is not None else st.nothing()
    fraction = st.floats().filter(lambda v: not math.isfinite(v) or v != int(v)).map(repr)
    words = st.text(alphabet="abcxyz.,-+e ", min_size=1).filter(
        lambda t: not t.strip().lstrip("+-").isdigit()
    )
    value = data.draw(below | above | fraction | words, label="value")
    root = tmp_path_factory.mktemp("cli")
    # The flag first: argparse converts it before it looks for the positionals and required flags.
    line = [command, _flag(action), value]
    line += ["--out", str(root / "out")] if command in ("demo", "train-demo") else []
    err = io.StringIO()
    with contextlib.ExitStack() as stack:
        for owner, name in TRIPWIRES:
            stack.enter_context(mock.patch.object(owner, name, _tripwire))
        stack.enter_context(contextlib.redirect_stderr(err))
        assert cli.main(line) == 2, line
    text = err.getvalue()
    assert text.count("\n") == 1 and text.startswith(
        f"gaussport {command}: error: argument {_flag(action)}"
    ), text
    assert not (root / "out").exists()


def test_every_flag_declares_what_it_accepts() -> None:
    # A flag that takes a value declares its range or kind (a type from gaussport.demo._arguments)
    # or its choices, so the parser refuses a bad value in one line and the cases above cover it.
    known = (Integer, Number, Directory, Device, SolverName, DataPath, InputFile, OutputFile)
    for name, parser in [("gaussport", PARSER), *COMMANDS.items()]:
        for action in parser._actions:
            if isinstance(action, (*SKIPPED, argparse._StoreTrueAction)):
                continue
            assert isinstance(action.type, known) or action.choices is not None, (
                f"{name} {_flag(action)}: declare its type (gaussport.demo._arguments) or choices"
            )
            assert bad_values(action), f"{name} {_flag(action)}: no bad value generated"
    assert len(CASES) >= 150


# ---------------------------------------------------------------------- the demo's Python functions
def _digits(**kwargs: Any) -> Callable[[], Any]:
    return lambda: demo.check_digits_demo(**kwargs)


def _mixture(**kwargs: Any) -> Callable[[], Any]:
    return lambda: demo.check_mixture_demo(**kwargs)


LIBRARY_CASES: list[tuple[str, Callable[[dict[str, str]], Callable[[], Any]]]] = [
    ("digits solvers as a string", lambda p: _digits(solvers="heun")),
    ("digits nfes as an int", lambda p: _digits(nfes=6)),
    ("digits nfes [0]", lambda p: _digits(nfes=[0])),
    ("digits nfes [2.5]", lambda p: _digits(nfes=[2.5])),
    ("digits unknown solver", lambda p: _digits(solvers=["nope"])),
    ("digits teleport none", lambda p: _digits(teleport="none")),
    ("digits sigma_skip nan", lambda p: _digits(sigma_skip=float("nan"))),
    ("digits sigma_skip '2'", lambda p: _digits(sigma_skip="2")),
    ("digits batch 0", lambda p: _digits(batch=0)),
    ("digits batch 2.0", lambda p: _digits(batch=2.0)),
    ("digits batch True", lambda p: _digits(batch=True)),
    ("digits seed -1", lambda p: _digits(seed=-1)),
    ("digits seed 2**64", lambda p: _digits(seed=2**64)),
    ("digits frechet_samples 1", lambda p: _digits(frechet_samples=1)),
    ("digits frechet_seeds 0", lambda p: _digits(frechet_seeds=0)),
    ("digits reference_steps 0", lambda p: _digits(reference_steps=0)),
    ("digits device bogus", lambda p: _digits(device="bogus")),
    ("digits device 3", lambda p: _digits(device=3)),
    ("digits directory missing", lambda p: _digits(directory=p["missing"])),
    ("digits directory a file", lambda p: _digits(directory=p["file"])),
    ("digits directory without classifier", lambda p: _digits(directory=p["model"])),
    ("digits cache_dir under a file", lambda p: _digits(cache_dir=p["file"] + "/sub")),
    ("mixture steps as a string", lambda p: _mixture(steps="3")),
    ("mixture steps []", lambda p: _mixture(steps=[])),
    ("mixture steps [0]", lambda p: _mixture(steps=[0])),
    ("mixture steps [2]", lambda p: _mixture(steps=[2])),
    ("mixture unknown solver", lambda p: _mixture(solver="nope")),
    ("mixture sigma_skip 0", lambda p: _mixture(sigma_skip=0.0)),
    ("mixture batch 0", lambda p: _mixture(batch=0)),
    ("mixture seed -1", lambda p: _mixture(seed=-1)),
    ("run_mixture_demo batch 0", lambda p: lambda: demo.run_mixture_demo((3,), batch=0)),
    *[
        (f"train_digits {kw}", lambda p, kw=kw: lambda: train_digits(p["out"] + "/train", **kw))
        for kw in (
            {"seed": -1},
            {"seed": 2**64 - 2},  # the run also uses seed + 2
            {"seed": 1.0},
            {"steps": 0},
            {"batch_size": True},
            {"classifier_epochs": "3"},
            {"test_fraction": 1.0},
            {"num_threads": 0},
            {"held_out_images": 2.5},
        )
    ],
]


@pytest.mark.parametrize(("label", "call"), LIBRARY_CASES, ids=[label for label, _ in LIBRARY_CASES])
def test_demo_functions_refuse_bad_arguments_before_any_work(
    label: str, call: Callable[[dict[str, str]], Callable[[], Any]], places: dict[str, str]
) -> None:
    rejected(call(places))


def test_demo_outputs_into_a_file_leave_it_unchanged(places: dict[str, str]) -> None:
    result = demo.DigitsDemo((), torch.zeros(1), {"solvers": [], "nfes": [], "teleport": "respace"}, 0.0, 0.0)
    target = Path(places["file"])
    unchanged_after_failure(target, lambda: demo.write_digits_outputs(result, target, plots=False))
    unchanged_after_failure(target, lambda: demo.write_digits_outputs(result, target / "sub", plots=False))

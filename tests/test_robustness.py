"""Property tests over hostile input: every Config value, `vitgan train` argument, data file or checkpoint file
either works or gives a one-line error that names the field or the file; never a traceback.

The number of examples per property is VITGAN_FUZZ_EXAMPLES (default 100; docs/reliability.md records a run of
2,000)."""

import contextlib
import dataclasses
import io
import os
import random
import typing

import numpy as np
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitgan import Config, ConfigError, presets, pretrained
from vitgan.cli import main
from vitgan.data import DataError, load
from vitgan.training import checkpoint
from vitgan.training.checkpoint import CheckpointError

EXAMPLES = int(os.environ.get("VITGAN_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = [f.name for f in dataclasses.fields(Config)]
HINTS = typing.get_type_hints(Config)

# argv can hold any character but NUL; text from the OS decodes undecodable bytes to lone surrogates U+DC80-U+DCFF
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0") | st.characters(
    min_codepoint=0xDC80, max_codepoint=0xDCFF), max_size=12)
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0x10", "1_000",
                                                                 " 3 ", "", "true", "-1", "2**40"]))
CLI_VALUES = st.one_of(TEXT, NUMBERS.map(str))


def _literal_choices(name):
    hint = HINTS[name]
    return list(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else []


CONFIG_VALUES = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), TEXT, st.lists(st.integers(),
                          max_size=2), st.sampled_from([c for name in FIELDS for c in _literal_choices(name)]))


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), CONFIG_VALUES, min_size=1, max_size=4))
def test_config_values_build_or_name_the_field(overrides):
    try:
        presets.get("mnist", **overrides)
        event("valid configuration")
    except ConfigError as error:
        event("ConfigError")
        message = str(error)
        field = message.split(":")[0]
        assert "\n" not in message and field in FIELDS, message
        assert field in overrides or any(name in message for name in overrides), (message, overrides)


def _cli(argv):
    """(exit status, stdout, stderr) of `vitgan ARGV`, in process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse: usage and a one-line reason, status 2 (or --help, status 0)
            code = exit.code
    return code, out.getvalue(), err.getvalue()


OPTIONS = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(Config) if f.metadata.get("cli", True)] + [
    # (Config's cond is no option: the switch --cond, without a value, sets it from the data)

    "--preset", "--tick", "--snap", "--keep", "--minutes", "--seed", "--precision", "--device", "--metrics",
    "--metric-every", "--nan-policy", "--resume"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(OPTIONS), CLI_VALUES), min_size=1, max_size=4))
def test_train_arguments_run_or_give_a_one_line_error(tmp_path, pairs):
    argv = ["train", "--dry-run", "--outdir", str(tmp_path / "runs")]
    for option, value in pairs:
        argv += [option, "auto" if option == "--resume" and value == "" else value]
    code, out, err = _cli(argv)
    assert "Traceback" not in err
    if code == 0:
        event("runs (exit 0)")
        return
    assert code == 2, (argv, code, err)
    last = err.strip().splitlines()[-1]
    if last.startswith("vitgan train: error: ") or last.startswith("vitgan: error: argument"):
        event("argparse error (exit 2)")
        return  # argparse's own message (after its usage line)
    event("one-line vitgan error (exit 2)")
    assert last.startswith("vitgan: error: ") and len(err.strip().splitlines()) <= 2, err
    subject = last.removeprefix("vitgan: error: ").split(":")[0]
    # the flag of a field, a value given, or the data source (the default `mnist`, when a size does not fit)
    assert subject in OPTIONS or subject == "mnist" or any(subject == value for _, value in pairs), last


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([".png", ".jpg", ".webp", ".bmp"]))
def test_a_corrupt_image_file_is_a_one_line_error_naming_it(tmp_path_factory, content, suffix):
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "good.png")
    (folder / f"bad{suffix}").write_bytes(content)
    try:
        data = load(str(folder), resolution=32, channels=1, progress=False)
    except DataError as error:
        event("DataError")
        assert "\n" not in str(error) and f"bad{suffix}" in str(error)
    else:
        event("a valid image")
        assert len(data) == 2  # the random bytes happened to be a valid image


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_damaged_training_state_never_loads_silently(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("state")
    path = folder / "training-state-000000004.pt"
    checkpoint.save_training_state(path, {"format": checkpoint.STATE_FORMAT, "G": {"w": torch.arange(64.0)}})
    raw = bytearray(path.read_bytes())
    for position in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4, unique=True)):
        raw[position] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    try:
        checkpoint.load_training_state(path)
        raise AssertionError("a damaged state loaded although its checksum differs")
    except CheckpointError as error:
        assert str(error).startswith(f"{path}: damaged") and "\n" not in str(error)
    checkpoint.checksum_path(path).unlink()  # without its checksum: it loads, or is a one-line error
    try:
        checkpoint.load_training_state(path)
    except CheckpointError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from(["training-state-000000004.pt", "net.safetensors"]))
@example(random.Random(0).randbytes(4096), "training-state-000000004.pt")  # once called "may be malicious"
def test_random_bytes_as_a_checkpoint_are_a_one_line_error(tmp_path_factory, content, name):
    path = tmp_path_factory.mktemp("ckpt") / name
    path.write_bytes(content)
    try:
        if name.endswith(".pt"):
            checkpoint.load_training_state(path)
        else:
            pretrained.load(path)
        raise AssertionError("random bytes loaded as a checkpoint")
    except CheckpointError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        assert "malicious" not in str(error)  # damaged, not dangerous: only a pickle that calls code is refused so


def test_ci_draws_the_same_examples_on_every_run():
    """With CI=true the property tests are derandomised and keep no database (tests/conftest.py), so CI never fails
    by chance; elsewhere they explore and remember failures in .hypothesis/."""
    ci = os.environ.get("CI", "").lower() == "true"
    assert settings.default.derandomize is ci and FUZZ.derandomize is ci
    assert (settings.default.database is None) is ci

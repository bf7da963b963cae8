"""The package's commands answer a user's mistake (missing or broken file, unknown name) with one line on stderr
naming the thing, exit status 1 and no half-made output; bugs keep their traceback, and so does every error under
--debug or HUMAN_PARSING_DEBUG=1."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from human_parsing_ros.errors import UserError, run_cli, user_message
from human_parsing_ros.tools.random_weights import make_random_weights

DEMO = "human_parsing_ros.tools.demo"
IMPORT_SCHP = "human_parsing_ros.tools.import_schp"
RANDOM_WEIGHTS = "human_parsing_ros.tools.random_weights"


def run(module: str, *args, debug: bool = False) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HUMAN_PARSING_DEBUG"}
    if debug:
        env["HUMAN_PARSING_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def assert_one_line(result: subprocess.CompletedProcess, prog: str, *names: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), lines
    assert all(name in lines[0] for name in names), lines
    return lines[0]


@pytest.fixture
def corrupt(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    return path


@pytest.mark.parametrize("which", ["missing", "corrupt", "directory"])
def test_the_demo_refuses_bad_weights_in_one_line_and_makes_no_output_folder(tmp_path, corrupt, which):
    weights = {"missing": tmp_path / "my.safetensors", "corrupt": corrupt, "directory": tmp_path}[which]
    out = tmp_path / "demo_out"
    result = run(DEMO, "--weights", weights, "--out", out, "--device", "cpu")
    assert_one_line(result, "human_parsing_demo", str(weights))
    assert not out.exists() and result.stdout == ""


def test_the_demo_refuses_an_unknown_device_and_an_output_path_that_is_a_file(tmp_path):
    weights = make_random_weights(tmp_path / "w.safetensors", "hri", input_size=(64, 64))
    out = tmp_path / "demo_out"
    assert_one_line(run(DEMO, "--weights", weights, "--out", out, "--device", "tpu"), "human_parsing_demo",
                    "--device tpu", "cuda:N")
    assert not out.exists()
    out.write_text("a file")
    assert_one_line(run(DEMO, "--weights", weights, "--out", out, "--device", "cpu"), "human_parsing_demo",
                    str(out), "not a folder")


def test_debug_shows_the_traceback_and_still_makes_no_output_folder(tmp_path, corrupt):
    out = tmp_path / "demo_out"
    for result in (run(DEMO, "--weights", corrupt, "--out", out, "--device", "cpu", debug=True),
                   run(DEMO, "--weights", corrupt, "--out", out, "--device", "cpu", "--debug")):
        assert result.returncode != 0 and "Traceback" in result.stderr and "WeightsError" in result.stderr
        assert not out.exists()


def test_import_schp_refuses_missing_and_corrupt_checkpoints_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04 truncated zip")
    output = tmp_path / "new_folder" / "out.safetensors"
    for source in (tmp_path / "missing.pth", garbage):
        assert_one_line(run(IMPORT_SCHP, source, output, "--dataset", "lip"), "human_parsing_import_schp",
                        str(source))
        assert not output.parent.exists()
    assert_one_line(run(IMPORT_SCHP, garbage, tmp_path, "--dataset", "lip"), "human_parsing_import_schp",
                    str(tmp_path), "is a folder")


def test_random_weights_refuses_an_unknown_class_set_and_a_folder_as_output(tmp_path):
    output = tmp_path / "new_folder" / "w.safetensors"
    line = assert_one_line(run(RANDOM_WEIGHTS, output, "--class-set", "hrii"), "human_parsing_random_weights",
                           "hrii")
    assert "known:" in line and not output.parent.exists()
    assert_one_line(run(RANDOM_WEIGHTS, tmp_path, "--class-set", "hri"), "human_parsing_random_weights",
                    str(tmp_path), "is a folder")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_one_line(run(RANDOM_WEIGHTS, blocker / "w.safetensors"), "human_parsing_random_weights", str(blocker))


def test_run_cli_keeps_tracebacks_for_bugs_and_shortens_user_errors(capsys, monkeypatch):
    monkeypatch.delenv("HUMAN_PARSING_DEBUG", raising=False)

    def user_mistake(argv):
        raise UserError("thing.txt: not what was expected\nsecond line of detail")

    def bug(argv):
        raise ValueError("a bug, not the user's fault")

    with pytest.raises(SystemExit) as exit_code:
        run_cli(user_mistake, [], prog="tool")
    assert exit_code.value.code == 1 and capsys.readouterr().err == "tool: thing.txt: not what was expected\n"
    with pytest.raises(ValueError, match="a bug"):
        run_cli(bug, [], prog="tool")
    with pytest.raises(UserError):
        run_cli(user_mistake, ["--debug"], prog="tool")
    monkeypatch.setenv("HUMAN_PARSING_DEBUG", "1")
    with pytest.raises(UserError):
        run_cli(user_mistake, [], prog="tool")
    monkeypatch.setenv("HUMAN_PARSING_DEBUG", "0")
    with pytest.raises(SystemExit):
        run_cli(user_mistake, [], prog="tool")
    assert user_message(FileNotFoundError(2, "No such file or directory", "a/b.pth")) == \
        "a/b.pth: No such file or directory"

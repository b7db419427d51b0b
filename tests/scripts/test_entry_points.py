"""Declarations are checked when the file is loaded, and a flooding script's logs stay bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcp_server.cli import build_parser, config_from_args
from mcp_server.core.entry_points import EntryPointFileError, ParameterError, load_entry_points
from mcp_server.core.logs import RotatingLog, read_log


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entry_points.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[entry_points.a]\ncommand = "python train.py"\n', "entry point 'a', command: must be"),
        ('[entry_points.a]\ncommand = ["python", "{lr}"]\n', "command: {lr} is not a declared"),
        ('[entry_points.a]\ncommand = ["x"]\nshell = true\n', "entry point 'a', shell: unknown"),
        ('[entry_points.a]\ncommand = ["x"]\ncwd = "nowhere"\n', "entry point 'a', cwd:"),
        (
            '[entry_points.a]\ncommand = ["x"]\n[entry_points.a.parameters]\n'
            'lr = { type = "float", default = 2.0, max = 1.0 }\n',
            "entry point 'a', parameters.lr.default: must be a number <= 1",
        ),
        (
            '[entry_points.a]\ncommand = ["x"]\n[entry_points.a.parameters]\n'
            'lr = { type = "complex" }\n',
            "parameters.lr.type: must be one of int, float, str, bool, path",
        ),
        ("[entry_points.a\n", "not valid TOML"),
        *(
            (
                f'[entry_points.a]\ncommand = ["x"]\nstop_grace_s = {grace}\n',
                "entry point 'a', stop_grace_s: must be a number of seconds, more than 0 and at "
                "most 3600",
            )
            for grace in ("0", "-1", "3601", "true", '"30"')
        ),
    ],
)
def test_a_bad_declaration_is_refused_naming_file_entry_and_field(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = _file(tmp_path, toml)
    with pytest.raises(EntryPointFileError) as caught:
        load_entry_points(path)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_parameters_become_whole_argv_elements_and_paths_stay_under_the_data_roots(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    path = _file(
        tmp_path,
        '[entry_points.a]\ncommand = ["python", "t.py", "--name={name}", "--data", "{data}", '
        '"--out", "runs/{operation_id}"]\n[entry_points.a.parameters]\n'
        'name = { type = "str" }\ndata = { type = "path", default = "data" }\n',
    )
    entry = load_entry_points(path)["a"]
    argv, values = entry.resolve({"name": "x; rm -rf ~"}, "op-1", (tmp_path,))
    assert argv == [
        "python",
        "t.py",
        "--name=x; rm -rf ~",
        "--data",
        str(tmp_path / "data"),
        "--out",
        "runs/op-1",
    ]
    assert values == {"name": "x; rm -rf ~", "data": "data"}
    with pytest.raises(ParameterError, match=r"params\.data: must be a path under"):
        entry.resolve({"name": "x", "data": "/etc"}, "op-1", (tmp_path,))
    with pytest.raises(ParameterError, match=r"params\.name: required"):
        entry.resolve({}, "op-1", (tmp_path,))


@pytest.mark.parametrize("command", [["serve", "--http"], ["bridge"]])
def test_the_cli_refuses_to_start_with_a_bad_file(tmp_path: Path, command: list[str]) -> None:
    path = _file(tmp_path, "[entry_points.a]\ncommand = []\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_server.cli",
            *command,
            "--entry-points",
            str(path),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"--entry-points: {path}: entry point 'a', command" in result.stderr


@pytest.mark.parametrize("command", ["serve", "bridge"])
def test_the_script_grace_flag_is_checked_and_reaches_the_config(command: str) -> None:
    parser = build_parser({})
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--script-grace", "0"])
    args = parser.parse_args([command, "--script-grace", "45"])
    assert args.script_grace == 45.0
    if command == "serve":
        assert config_from_args(args, {}).script_grace_s == 45.0


def test_a_flood_of_output_is_kept_within_its_bound(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, "stdout", max_bytes=1000, keep=3)
    for i in range(2000):
        log.write(f"line {i}\n".encode())
    log.close()
    kept = sum(p.stat().st_size for p in tmp_path.glob("stdout.log*"))
    assert kept <= 3000
    read = read_log(tmp_path, "op", "stdout", tail=2)
    assert read.lines == ["line 1998", "line 1999"] and read.truncated
    since = read_log(tmp_path, "op", "stdout", cursor=read.next_cursor - 10)
    assert since.lines == ["line 1999"] and not since.truncated
    old = read_log(tmp_path, "op", "stdout", cursor=0)
    assert old.truncated and old.lines[0].startswith("line 1")

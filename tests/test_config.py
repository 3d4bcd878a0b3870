"""crackseg.config: constants-at-the-top overrides, errors and --help."""
from __future__ import annotations

import pytest

from crackseg.config import ConfigError, configure, parse_overrides, tunables


def _namespace():
    return {"epochs": 10, "lr": 5e-5, "data": "../shared/datasets", "headless": False, "width": None,
            "size": (448, 448), "max_frames": 0, "_private": 1, "CONSTANT": 2, "helper": print}


def test_tunables_are_the_public_lower_case_simple_constants():
    assert list(tunables(_namespace())) == ["epochs", "lr", "data", "headless", "width", "size", "max_frames"]


@pytest.mark.parametrize("argv, expected", [
    (["--epochs=5"], {"epochs": 5}),
    (["--epochs", "5"], {"epochs": 5}),
    (["--lr=1e-3", "--data", "x/y"], {"lr": 1e-3, "data": "x/y"}),
    (["--lr=1"], {"lr": 1.0}),
    (["--max-frames=7"], {"max_frames": 7}),
    (["--max_frames=7"], {"max_frames": 7}),
    (["--headless"], {"headless": True}),
    (["--no-headless"], {"headless": False}),
    (["--headless=false"], {"headless": False}),
    (["--headless=yes"], {"headless": True}),
    (["--width=16"], {"width": 16}),
    (["--width=none"], {"width": None}),
    (["--width=MCLD"], {"width": "MCLD"}),
    (["--size=320,480"], {"size": (320, 480)}),
    (["--size=(64, 96)"], {"size": (64, 96)}),
    (["--data="], {"data": ""}),
    ([], {}),
])
def test_overrides(argv, expected):
    out = parse_overrides(argv, tunables(_namespace()))
    assert out == expected
    for k, v in expected.items():
        assert type(out[k]) is type(v)


def test_configure_updates_the_namespace_and_returns_the_config(capsys):
    ns = _namespace()
    config = configure(ns, "doc", ["--epochs=3", "--headless"])
    assert ns["epochs"] == 3 and ns["headless"] is True
    assert config == {**tunables(_namespace()), "epochs": 3, "headless": True}
    assert "override: epochs = 3" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--nope=1"], "--nope"),
    (["--no-epochs"], "--no_epochs"),
    (["--epochs=five"], "integer"),
    (["--epochs=1.5"], "integer"),
    (["--lr=fast"], "number"),
    (["--headless=maybe"], "true/false"),
    (["--epochs"], "needs a value"),
    (["epochs=3"], "unexpected argument"),
])
def test_bad_flags_exit_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        configure(_namespace(), "doc", argv)
    assert info.value.code == 2
    assert isinstance(info.value, ConfigError)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err
    assert len(err.splitlines()) == 1


def test_help_lists_every_flag(capsys):
    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as info:
            configure(_namespace(), "Script summary.", ["--epochs=3", flag])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("Script summary.")
        for key in tunables(_namespace()):
            assert f"--{key}=" in out
        assert "--epochs=10" in out and "_private" not in out and "CONSTANT" not in out


SCRIPT = '''"""demo script."""
from crackseg.config import configure

epochs = 10                 # passes over the data
lr = 5e-5                   # peak learning rate; decays
                            # linearly to zero over the run
send = "tcp://h:5555#x"     # stream target (a '#' inside the string is not a comment)
size = (448,
        448)                # crop size (H, W)
quiet = False
# a section comment, not about quiet
name = "x"  # label
helper = 3 if True else 4   # computed, still a constant
'''


def test_help_shows_each_constants_comment_beside_its_flag(tmp_path, capsys):
    from crackseg.config import constant_comments

    path = tmp_path / "demo.py"
    path.write_text(SCRIPT)
    comments = constant_comments(SCRIPT)
    assert comments == {"epochs": "passes over the data",
                        "lr": "peak learning rate; decays linearly to zero over the run",
                        "send": "stream target (a '#' inside the string is not a comment)",
                        "size": "crop size (H, W)", "name": "label", "helper": "computed, still a constant"}
    ns = {"__file__": str(path), "__name__": "__main__"}
    exec(compile(SCRIPT.replace("from crackseg.config import configure\n", ""), str(path), "exec"), ns)
    with pytest.raises(SystemExit) as info:
        configure(ns, ns.get("__doc__"), ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "demo script."
    epochs = next(line for line in lines if line.strip().startswith("--epochs="))
    assert epochs.split("#")[0].rstrip().endswith("passes over the data") and "--epochs=10" in epochs
    assert "linearly to zero over the run" in out and "'#' inside the string" in out
    assert next(line for line in lines if "--quiet=" in line).strip() == "--quiet=False"   # no comment, none made up
    assert "section comment" not in out
    # every comment sits in one column
    starts = {epochs.index("passes"), next(line for line in lines if "--send=" in line).index("stream target")}
    assert len(starts) == 1


def test_help_without_a_source_file_still_lists_flags(capsys):
    with pytest.raises(SystemExit):
        configure({"epochs": 3, "__file__": "/nonexistent/script.py"}, "doc", ["--help"])
    assert "--epochs=3" in capsys.readouterr().out
    from crackseg.config import constant_comments
    assert constant_comments("this is not python (") == {}


def test_real_script_help_has_its_comments():
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, "report.py", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60).stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("--mm_per_px="))
    assert "millimetres per pixel" in line

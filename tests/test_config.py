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

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
    assert isinstance(info.value.__cause__, ConfigError)  # the library raises ConfigError; configure exits
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


# ---------------------------------------------------------------------------------------------- recipe files
def test_library_code_raises_config_error_not_system_exit():
    with pytest.raises(ConfigError, match="unknown flag --nope") as info:
        parse_overrides(["--nope=1"], tunables(_namespace()))
    assert not isinstance(info.value, SystemExit)


def _recipe(tmp_path, text, name="stage.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_recipe_file_applies_then_flags_win(tmp_path, capsys):
    recipe = _recipe(tmp_path, '"""a stage."""\nimport math\nepochs = 2 * 10   # computed is fine\nlr = 1e-4\n'
                               'size = [64, 96]\nwidth = 8\n_scratch = math.pi\n')
    ns = _namespace()
    config = configure(ns, "doc", [recipe, "--lr=1e-3"])
    assert config["epochs"] == 20 and ns["epochs"] == 20
    assert config["lr"] == 1e-3 and ns["lr"] == 1e-3  # the flag wins over the recipe
    assert config["size"] == (64, 96) and type(config["size"]) is tuple
    assert config["width"] == 8 and config["data"] == "../shared/datasets"
    assert config["recipe"] == [recipe]  # recorded, so config.json and cards show it
    out = capsys.readouterr().out
    assert f"recipe: {recipe}" in out and "recipe: epochs = 20" in out and "override: lr = 0.001" in out


def test_recipes_apply_in_order_and_int_reads_as_float(tmp_path):
    first = _recipe(tmp_path, "epochs = 3\nlr = 1\n", "a.py")
    second = _recipe(tmp_path, "epochs = 4\n", "b.py")
    config = configure(_namespace(), "doc", [first, second])
    assert config["epochs"] == 4 and config["lr"] == 1.0 and type(config["lr"]) is float
    assert config["recipe"] == [first, second]


def test_without_a_recipe_there_is_no_recipe_key():
    assert "recipe" not in configure(_namespace(), "doc", ["--epochs=2"])


@pytest.mark.parametrize("text, words", [
    ("epochs = 3\nnope = 1\n", "unknown key 'nope'"),
    ("epochs = 'five'\n", "epochs expects an integer"),
    ("epochs = 1.5\n", "epochs expects an integer"),
    ("epochs = True\n", "epochs expects an integer"),
    ("lr = 'fast'\n", "lr expects a number"),
    ("headless = 1\n", "headless expects true/false"),
    ("data = 3\n", "data expects a string"),
    ("size = 64\n", "size expects a tuple or list"),
    ("epochs = (\n", "not valid Python"),
    ("epochs = 1 / 0\n", "ZeroDivisionError"),
])
def test_bad_recipes_exit_with_one_line_naming_the_file_and_key(tmp_path, text, words, capsys):
    recipe = _recipe(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        configure(_namespace(), "doc", [recipe, "--epochs=3"])
    assert info.value.code == 2 and isinstance(info.value.__cause__, ConfigError)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {recipe}") and words in err, err
    assert len(err.splitlines()) == 1


def test_a_missing_recipe_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        configure(_namespace(), "doc", [str(tmp_path / "nothing.py")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nothing.py'}: recipe file not found"


def test_a_recipe_after_the_flags_is_refused(tmp_path, capsys):
    recipe = _recipe(tmp_path, "epochs = 3\n")
    with pytest.raises(SystemExit):
        configure(_namespace(), "doc", ["--lr=1e-3", recipe])
    assert "unexpected argument" in capsys.readouterr().err


def test_shipped_recipes_name_only_their_scripts_constants():
    """Every file in recipes/ applies cleanly to the script it is for (named in its docstring)."""
    import ast
    import re

    from conftest import REPO
    from crackseg.config import read_recipe

    recipes = sorted((REPO / "recipes").glob("*.py"))
    assert len(recipes) >= 5
    for recipe in recipes:
        doc = ast.get_docstring(ast.parse(recipe.read_text())) or ""
        script = re.search(r"(Train_[123]_Step\.py)", doc)
        assert script, f"{recipe}: the docstring names the script it is for"
        constants = _script_constants(REPO / script.group(1))
        values = read_recipe(recipe, constants)
        assert values and set(values) <= set(constants)


def _script_constants(path):
    """A Train script's constants without running it (its imports need Keras): the top-level literal
    assignments before ``configure``."""
    import ast

    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return tunables(out)

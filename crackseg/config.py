"""Constants at the top of a script + ``--key=value`` overrides + ``--help``, nanoGPT-style.

A script defines its tunable constants as lower-case module globals, then calls::

    config = configure(globals(), __doc__)

Every constant of a simple type (int, float, bool, str, None, tuple/list) becomes a flag: ``--epochs=5``,
``--epochs 5``, ``--max-frames=10`` (dashes read as underscores), ``--headless`` / ``--no-headless`` for bools.
Values are checked against the type of the default; unknown flags and bad values exit with one line.

Recipe files (nanoGPT's ``config/*.py``): ``python Train_3_Step.py recipes/student_stage3_bce.py --lr=1e-4`` first
applies the plain assignments of each ``*.py`` file given before the flags (``lr = 1e-4``), in order, then the
flags (flags win). A name the script does not have, or a value of the wrong type, is one ``error:`` line naming the
file and the key. The returned config then has ``recipe``: the list of files applied (so run config.json and model
cards record it); without a recipe file there is no such key.
``--help`` lists every flag with its default and the comment written beside the constant (read from the script's
source, ``namespace["__file__"]``), including comment lines that continue it, indented, just below.
"""
from __future__ import annotations

import ast
import io
import sys
import textwrap
import tokenize
import types
from pathlib import Path
from typing import Any

_SIMPLE = (int, float, bool, str, type(None), tuple, list)


class ConfigError(ValueError):
    """An unknown flag or recipe key, a value of the wrong type, an unreadable recipe file; the message is one line.
    ``configure`` (called by the scripts) prints it as ``error: ...`` and exits with status 2."""


def tunables(namespace: dict) -> dict[str, Any]:
    """The overridable constants of a script: public lower-case globals of simple types, in definition order."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k.islower() and isinstance(v, _SIMPLE) and not callable(v)}


def _convert(key: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{key} expects true/false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"--{key} expects an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--{key} expects a number, got {raw!r}") from None
    if isinstance(default, (tuple, list)):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = tuple(p.strip() for p in raw.split(",") if p.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(default)(value)
    if default is None:  # no type to check against: a Python literal if it reads as one, else the string
        if raw.lower() in ("none", "null", ""):
            return None
        try:
            value = ast.literal_eval(raw)
            return value if isinstance(value, (int, float, bool)) else raw
        except (ValueError, SyntaxError):
            return raw
    return raw


def parse_overrides(argv: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``argv`` flags against ``defaults``; returns only the overridden keys."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --key=value")
        body = arg[2:]
        key, eq, raw = body.partition("=")
        key = key.replace("-", "_")
        negated = False
        if key not in defaults and key.startswith("no_") and isinstance(defaults.get(key[3:]), bool) and not eq:
            key, negated = key[3:], True
        if key not in defaults:
            raise ConfigError(f"unknown flag --{key}; --help lists the flags")
        default = defaults[key]
        if not eq:
            if isinstance(default, bool):
                out[key] = not negated
                i += 1
                continue
            if i + 1 >= len(argv):
                raise ConfigError(f"--{key} needs a value")
            raw = argv[i + 1]
            i += 1
        out[key] = _convert(key, raw, default)
        i += 1
    return out


def constant_comments(source: str) -> dict[str, str]:
    """``{name: comment}`` for the module-level ``name = value  # comment`` lines of a script's source; comment-only
    lines indented just below one continue its comment. Unparsable source gives {}."""
    try:
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, tokenize.TokenError, ValueError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            continue
        end = node.end_lineno or node.lineno
        parts = [comments[n] for n in range(node.lineno, end + 1) if n in comments]
        if not parts:
            continue
        n = end + 1
        while (n in comments and n not in code_lines and n <= len(lines)
               and lines[n - 1][:1].isspace()):  # an indented comment-only line continues this one
            parts.append(comments[n])
            n += 1
        out[targets[0].id] = " ".join(p for p in parts if p)
    return out


def script_comments(namespace: dict) -> dict[str, str]:
    """``constant_comments`` of the file a namespace came from ({} when there is none or it cannot be read)."""
    path = namespace.get("__file__")
    try:
        return constant_comments(Path(path).read_text("utf-8")) if path else {}
    except (OSError, UnicodeDecodeError):
        return {}


def help_text(defaults: dict[str, Any], doc: str | None, comments: dict[str, str] | None = None,
              width: int = 116) -> str:
    """The script's docstring, then one entry per flag: ``--name=default`` and the constant's comment beside it
    (wrapped; on the next line when the flag itself is long)."""
    comments = comments or {}
    lines = [(doc or "").strip(), "", "flags (defaults are the constants at the top of the script):"]
    flags = {k: f"  --{k}={v!r}" for k, v in defaults.items()}
    column = min(max((len(f) for f in flags.values()), default=0) + 2, 40)
    for k, flag in flags.items():
        comment = comments.get(k, "")
        if not comment:
            lines.append(flag)
            continue
        wrapped = textwrap.wrap(comment, max(30, width - column)) or [""]
        if len(flag) + 2 > column:
            lines.append(flag)
            lines.extend(" " * column + w for w in wrapped)
        else:
            lines.append(flag.ljust(column) + wrapped[0])
            lines.extend(" " * column + w for w in wrapped[1:])
    return "\n".join(lines).strip()


_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
               tuple: "a tuple or list", list: "a tuple or list"}


def _check_value(where: str, key: str, value: Any, default: Any) -> Any:
    """``value`` (from a recipe file) checked against the type of ``default`` as flags are: an int where a float is
    expected is taken as that float, a list where a tuple is expected as that tuple; a None default (no type to
    check against) takes any simple value."""
    if default is None:
        if not isinstance(value, _SIMPLE) or callable(value):
            raise ConfigError(f"{where}: {key} must be a number, string, bool, None or tuple, got {value!r}")
        return value
    kind = type(default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{where}: {key} expects {_TYPE_WORDS.get(kind, kind.__name__)}, got {value!r}")
    return kind(value) if kind in (float, tuple, list) else value


def read_recipe(path: str | Path, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The constants a recipe file sets: its public lower-case module-level names (imports, functions and
    ``_private`` names are ignored), each a constant of the script (``defaults``) with a value of its type.
    ``defaults=None``: the values as written, unchecked (to read where a stage writes, without its script)."""
    path = Path(path)
    try:
        source = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read recipe file ({exc})") from None
    scope: dict[str, Any] = {"__file__": str(path), "__name__": "__recipe__"}
    try:
        exec(compile(source, str(path), "exec"), scope)  # a recipe is Python the user wrote
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})") from None
    except Exception as exc:  # a recipe that fails to run is a bad recipe, said in one line
        raise ConfigError(f"{path}: {type(exc).__name__}: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in scope.items():
        if key.startswith("_") or not key.islower() or isinstance(value, types.ModuleType) or callable(value):
            continue
        if defaults is None:
            values[key] = value
            continue
        if key not in defaults:
            raise ConfigError(f"{path}: unknown key {key!r}; this script's --help lists the constants a recipe "
                              f"may set")
        values[key] = _check_value(str(path), key, value, defaults[key])
    return values


def split_recipes(argv: list[str]) -> tuple[list[str], list[str]]:
    """The leading ``*.py`` recipe files of ``argv`` and the flags after them."""
    n = 0
    while n < len(argv) and not argv[n].startswith("-") and argv[n].endswith(".py"):
        n += 1
    return list(argv[:n]), list(argv[n:])


def resolve(namespace: dict, argv: list[str]) -> tuple[dict[str, Any], list[str], dict, dict]:
    """``(config, recipe files, recipe values, flag overrides)`` for ``argv`` against the script's constants; raises
    ConfigError. Recipe files apply in order, then the flags."""
    defaults = tunables(namespace)
    recipes, flags = split_recipes(argv)
    from_recipes: dict[str, Any] = {}
    for recipe in recipes:
        from_recipes.update(read_recipe(recipe, defaults))
    overrides = parse_overrides(flags, defaults)
    config = {**defaults, **from_recipes, **overrides}
    if recipes:
        config["recipe"] = recipes
    return config, recipes, from_recipes, overrides


def configure(namespace: dict, doc: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Apply recipe files and command-line overrides to a script's constants in ``namespace``; return the resolved
    config. For the scripts: a ConfigError becomes one ``error:`` line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(help_text(tunables(namespace), doc, script_comments(namespace)))
        raise SystemExit(0)
    try:
        config, recipes, from_recipes, overrides = resolve(namespace, argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    for recipe in recipes:
        print(f"recipe: {recipe}")
    for k, v in from_recipes.items():
        if k not in overrides:
            print(f"recipe: {k} = {v!r}")
    for k, v in overrides.items():
        print(f"override: {k} = {v!r}")
    namespace.update(from_recipes)
    namespace.update(overrides)
    return config

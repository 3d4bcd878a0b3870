"""Constants at the top of a script + ``--key=value`` overrides + ``--help``, nanoGPT-style.

A script defines its tunable constants as lower-case module globals, then calls::

    config = configure(globals(), __doc__)

Every constant of a simple type (int, float, bool, str, None, tuple/list) becomes a flag: ``--epochs=5``,
``--epochs 5``, ``--max-frames=10`` (dashes read as underscores), ``--headless`` / ``--no-headless`` for bools.
Values are checked against the type of the default; unknown flags and bad values exit with one line.
``--help`` lists every flag with its default and the comment written beside the constant (read from the script's
source, ``namespace["__file__"]``), including comment lines that continue it, indented, just below.
"""
from __future__ import annotations

import ast
import io
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any

_SIMPLE = (int, float, bool, str, type(None), tuple, list)


class ConfigError(SystemExit):
    """Raised (as SystemExit with status 2) for an unknown flag or a value of the wrong type."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")
        self.code = 2


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


def configure(namespace: dict, doc: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Apply command-line overrides to a script's constants in ``namespace``; return the resolved config."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = tunables(namespace)
    if "-h" in argv or "--help" in argv:
        print(help_text(defaults, doc, script_comments(namespace)))
        raise SystemExit(0)
    try:
        overrides = parse_overrides(argv, defaults)
    except ConfigError as exc:  # SystemExit with an int code prints nothing: say why here
        print(exc.args[0], file=sys.stderr)
        raise
    for k, v in overrides.items():
        print(f"override: {k} = {v!r}")
    namespace.update(overrides)
    return {**defaults, **overrides}

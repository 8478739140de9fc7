"""Command options as dataclasses: one home for every default (standard library only).

Each command's options are one dataclass whose fields carry their help text
(:func:`opt`); :func:`add_options` turns it into argparse arguments and :func:`from_args`
back into the dataclass, so a default is written once, in the field, and shows in
``--help`` through :class:`HelpFormatter`. Library functions take the same dataclass.

Field types (annotations as strings): ``int``, ``float``, ``str``, ``bool`` (a
``--flag / --no-flag`` pair), ``list`` (``nargs`` or ``action="append"`` from the
metadata), each optionally ``| None``. A field without a default is a required option.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

MISSING = dataclasses.MISSING

#: ``--use-averaged-model`` of decode, export-onnx, transcribe and average-checkpoints
USE_AVERAGED_MODEL_HELP = ("the mean of the weights sampled during training (mvqkd train "
                           "--average-period) between epoch E-avg and E (or the --avg-th step "
                           "file before --iter's), icefall's --use-averaged-model")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after every option that has a meaningful default: not on required
    options, not when the default is None, and never twice. In descriptions and epilogs,
    paragraphs with indented lines (an "examples:" header and indented commands) are kept
    as written; others reflow."""

    def _fill_text(self, text, width, indent):
        paragraphs = text.split("\n\n")
        out = []
        for para in paragraphs:
            lines = para.splitlines()
            if any(line.startswith("  ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(super()._fill_text(para, width, indent))
        return "\n\n".join(out)

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action.default, (list, tuple)) and not action.default:
            return text
        return super()._get_help_string(action)


def opt(default: Any = MISSING, help: str = "", *, default_factory=MISSING, group: str | None = None,
        flag: str | None = None, required: bool = False, **argparse_kw):
    """A dataclass field that is also a command-line option.

    Args:
        default / default_factory: as :func:`dataclasses.field`; neither = required option.
        required: a required option even though the dataclass has a default (for library
            callers that fill it in later).
        help: the option's help text (no hand-written default: the formatter adds it).
        group: argparse argument group title.
        flag: option string (default ``--field-name``).
        argparse_kw: passed to ``add_argument`` (``choices``, ``metavar``, ``nargs``,
            ``type``, ``action``).
    """
    meta = {"help": help, "group": group, "flag": flag, "argparse": argparse_kw, "required": required}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_TYPES = {"int": int, "float": float, "str": str}


def _base_type(annotation: str) -> tuple[str, bool]:
    """``"int | None"`` -> ``("int", True)``."""
    parts = [p.strip() for p in str(annotation).replace("Optional[", "").rstrip("]").split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    base = parts[0].split("[")[0] if parts else "str"
    return base, optional


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add one argument per field of the dataclass ``cls`` (fields in ``skip`` excepted)."""
    groups: dict[str | None, Any] = {None: parser}
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        meta = f.metadata
        title = meta.get("group")
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        kw = dict(meta.get("argparse") or {})
        kw.setdefault("help", meta["help"])
        kw["dest"] = f.name
        base, _ = _base_type(f.type)
        required = meta.get("required") or (f.default is MISSING and f.default_factory is MISSING)
        if required:
            kw["required"] = True
        else:
            kw["default"] = f.default if f.default is not MISSING else f.default_factory()
        if base == "bool":
            kw.setdefault("action", argparse.BooleanOptionalAction)
        elif base == "list":
            if "action" not in kw:
                kw.setdefault("nargs", "+")
        elif base in _TYPES and "type" not in kw and kw.get("action") is None:
            kw["type"] = _TYPES[base]
        groups[title].add_argument(meta.get("flag") or "--" + f.name.replace("_", "-"), **kw)


def from_args(cls, args: argparse.Namespace | dict, **overrides):
    """The dataclass ``cls`` from parsed arguments (or a dict); unknown keys are ignored."""
    d = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in d.items() if k in names}
    values.update(overrides)
    return cls(**values)


def name_path(value: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(name, path)``; an argparse error otherwise."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def add_teacher_device_options(p) -> None:
    """``--device`` / ``--dtype`` of the commands that run a teacher."""
    p.add_argument("--device", default="auto",
                   help="torch device: auto (cuda when torch sees a GPU, else cpu), cpu, cuda:0 ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="teacher precision: auto = float32, IEEE float32 on a GPU too (no TF32); half "
                        "precision on request")


def add_checkpoint_selection_options(p, folder: str) -> None:
    """``--epoch / --iter / --avg / --use-averaged-model`` of the commands that read a training
    folder (export-onnx, transcribe, average-checkpoints), given to them as ``folder``; the
    same selection as :class:`mvqkd.decode.config.DecodeConfig`'s."""
    p.add_argument("--epoch", type=int, default=None,
                   help=f"with {folder}: average epoch-(E-avg+1..E).pt (default: the newest epoch)")
    p.add_argument("--iter", "--iteration", dest="iteration", type=int, default=None,
                   help=f"with {folder}: average checkpoint-STEP.pt up to ITER")
    p.add_argument("--avg", type=int, default=1, help="checkpoints to average")
    p.add_argument("--use-averaged-model", action="store_true",
                   help=f"with {folder}: {USE_AVERAGED_MODEL_HELP} (the model mvqkd decode "
                        "--use-averaged-model scores; the demo's)")


def add_parser(subparsers, name: str, help: str, description: str, epilog: str | None = None):
    """A sub-command parser with the house formatter and an examples epilog."""
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=HelpFormatter)


def user_errors(exit_code: int, *extra: type[BaseException]):
    """Decorator for a CLI handler ``fn(args) -> int``: the expected user errors
    (``OSError``, ``ValueError`` and ``extra``; their messages name the file, cut or option
    and the fix) become one ERROR log line and the exit status ``exit_code``, not a traceback."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def run(args) -> int:
            try:
                return fn(args)
            except (OSError, ValueError, *extra) as e:
                logging.getLogger(fn.__module__).error("%s", e)
                return exit_code

        return run

    return wrap

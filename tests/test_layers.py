"""The shape of the package: imports run one way down the layers, the ground floor stays
standard-library-only, and no module restates the conventions.

The layer order is written here and in docs/DEVELOPING.md (a test checks they agree).
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "mvqkd"

#: ground floor first; a module may import its own layer and the ones before it
LAYERS = ["ground", "data", "teacher", "quantizer", "indexes", "losses", "student", "training", "decode"]
GROUND = {"conventions", "options", "logs", "_lazy", "mkl_vendor", "__init__"}
TOP = {"cli"}  # the dispatcher: it only names command modules, by string


def layer_of(module: str) -> str | None:
    """``mvqkd.student.model`` -> ``student``; ground-floor modules -> ``ground``."""
    parts = module.split(".")
    if parts[0] != "mvqkd":
        return None
    if len(parts) == 1 or parts[1] in GROUND:
        return "ground"
    if parts[1] in TOP:
        return "top"
    return parts[1] if parts[1] in LAYERS else f"unknown:{parts[1]}"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, this: str | None = None) -> list[tuple[int, str]]:
    """Every mvqkd module imported anywhere in ``path`` (function-local and relative imports
    included); ``this`` is the module's dotted name (default: from its path)."""
    tree = ast.parse(path.read_text())
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mvqkd")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mvqkd"):
                out.append((node.lineno, target))
    return out


def package_files():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_imports_run_down_the_layers():
    bad = []
    for path in package_files():
        src = layer_of(module_name(path))
        if src == "top":
            continue
        assert src in LAYERS, f"{path}: module outside the declared layers ({src})"
        for line, target in imported_modules(path):
            dst = layer_of(target)
            assert dst in LAYERS, f"{path}:{line}: import of {target} outside the layers ({dst})"
            if LAYERS.index(dst) > LAYERS.index(src):
                bad.append(f"{path.relative_to(REPO)}:{line}: {src} imports {target} ({dst})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_checker_sees_upward_and_relative_imports(tmp_path):
    """The walk finds a function-local upward import and resolves relative ones."""
    fake = tmp_path / "probe.py"
    fake.write_text("from .dataset import KDDataset\n"
                    "def f():\n    from mvqkd.student.model import Transducer\n")
    found = imported_modules(fake, this="mvqkd.data.probe")
    assert found == [(1, "mvqkd.data.dataset"), (3, "mvqkd.student.model")]
    assert LAYERS.index(layer_of(found[1][1])) > LAYERS.index(layer_of("mvqkd.data.probe"))


def test_layer_order_is_the_documented_one():
    text = (REPO / "docs" / "DEVELOPING.md").read_text()
    m = re.search(r"Layer order: `([^`]+)`", text)
    assert m, "docs/DEVELOPING.md must state 'Layer order: `...`'"
    assert [s.strip() for s in m.group(1).split("<")] == LAYERS


def test_ground_floor_imports_only_the_standard_library():
    for name in ("conventions", "options", "logs", "_lazy", "mkl_vendor"):
        tree = ast.parse((PKG / f"{name}.py").read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                root = mod.split(".")[0]
                assert root in sys.stdlib_module_names or root == "__future__", (name, mod)
    code = ("import sys, mvqkd.conventions, mvqkd.options, mvqkd.logs, mvqkd.mkl_vendor; "
            "print(sorted(m for m in ('torch', 'numpy', 'lhotse') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _number_tokens(path: Path):
    toks = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]
    for prev, tok in zip([None] + toks, toks):
        if tok.type == tokenize.NUMBER:
            neg = prev is not None and prev.type == tokenize.OP and prev.string == "-"
            yield tok.start[0], ("-" if neg else "") + tok.string


def test_no_stray_copies_of_the_conventions():
    """Frame shift, ignore index and sample rate are literals only in mvqkd/conventions.py
    (tools/ too, except 0.02, which a benchmark uses as a noise level)."""
    stray = {"0.02", "-100", "16000", "16_000"}
    bad = []
    for path in package_files() + sorted((REPO / "tools").glob("*.py")):
        if path.name == "conventions.py":
            continue
        here = stray - {"0.02"} if path.parent.name == "tools" else stray
        bad += [f"{path.relative_to(REPO)}:{line}: {value}" for line, value in _number_tokens(path)
                if value in here]
    assert not bad, "literal copies of mvqkd.conventions:\n" + "\n".join(bad)


def test_size_lists_match_their_sources():
    from mvqkd.decode.config import METHODS
    from mvqkd.decode.search import SEARCH_METHODS
    from mvqkd.student.config import PRESETS
    from mvqkd.teacher.ctc import ALL_SIZES
    from mvqkd.training.config import MODEL_SIZES, TEACHER_SIZES

    assert set(MODEL_SIZES) == set(PRESETS)
    assert set(TEACHER_SIZES) == set(ALL_SIZES)
    assert set(METHODS) == set(SEARCH_METHODS)

#!/usr/bin/env python3
"""Regenerate ``mvqkd/data/resources/sentences.txt``, the text of the synthetic corpus.

Source: the docstrings of the CPython standard library (PSF licence), read from the running
interpreter's ``Lib/`` folder. It is real, edited English prose that exists offline wherever
Python does; it is technical, and that is fine for an ASR benchmark. The list is generated
ONCE and shipped with the package, so the corpus is identical on every machine whatever
its Python version (the stdlib text changes between versions).

Selection: sentences of 5..18 words, no digits or code symbols, upper-cased, apostrophes
kept, de-duplicated; then only sentences whose words are all among the ``--vocab`` most
frequent words (default 2000), so that a small CPU-trained student can learn the vocabulary.

Usage: python tools/make_sentence_list.py [--vocab 2000] [--out PATH]
"""

from __future__ import annotations

import argparse
import ast
import collections
import re
import sys
import sysconfig
from pathlib import Path

CODE_CHARS = re.compile(r"[0-9_=(){}\[\]<>*/\\|@#$%^&~`\"+:;]")


def stdlib_docstrings() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        if {"test", "tests", "site-packages", "idlelib"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
    return docs


def sentences_of(docs: list[str], min_words: int = 5, max_words: int = 18) -> list[tuple[str, ...]]:
    out = []
    for block in re.split(r"\n\s*\n", "\n\n".join(docs)):
        paragraph = " ".join(line.strip() for line in block.splitlines())
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            if CODE_CHARS.search(sentence):
                continue
            words = [w.strip("'") for w in re.sub(r"[^A-Za-z' ]", " ", sentence).upper().split()]
            words = [w for w in words if w]
            if min_words <= len(words) <= max_words:
                out.append(tuple(words))
    return list(dict.fromkeys(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument(
        "--out", type=Path,
        default=Path(__file__).resolve().parents[1] / "mvqkd/data/resources/sentences.txt",
    )
    args = parser.parse_args()
    sentences = sentences_of(stdlib_docstrings())
    counts = collections.Counter(w for s in sentences for w in s)
    vocab = {w for w, _ in counts.most_common(args.vocab)}
    kept = [" ".join(s) for s in sentences if all(w in vocab for w in s)]
    header = (
        f"# Sentences from the docstrings of the CPython {sys.version.split()[0]} standard library (PSF licence),\n"
        f"# restricted to the {args.vocab} most frequent words. Made by tools/make_sentence_list.py.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n".join(kept) + "\n", encoding="utf-8")
    print(f"wrote {len(kept)} sentences, {len({w for s in kept for w in s.split()})} distinct words -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

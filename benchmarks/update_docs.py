"""Fill every figure that a README or a bundle's ``metadata.json`` quotes from the committed results files.

Figures are never typed by hand: each one is generated from a results file that a benchmark script wrote
(``benchmarks/results/*.json`` for values, ``*.md`` for tables). Three kinds of source:

- ``metadata.json`` ``eval_metrics``: every key is listed in ``benchmarks/figures.json`` with the results file and
  the path of the value inside it (``{"bundles/<name>/configs/metadata.json": {"<key>": {"file": ...,
  "path": "a.b.c", "digits": 3}}}``); a metadata key that the manifest does not list is an error.
- an inline value in a markdown file: ``<!-- value: benchmarks/results/demos.json:adacon_bmd_xray.test.r2:.3f -->``
  ``0.688<!-- /value -->`` (file, dotted path, Python format spec);
- a whole table in a markdown file: ``<!-- table: benchmarks/results/lrc_pretraining_speed.md#2 -->`` ... ``<!-- /table
  -->``, the 2nd markdown table of that results file, copied verbatim.

    python benchmarks/update_docs.py            # rewrite the figures in place
    python benchmarks/update_docs.py --check    # exit 1 and list every figure that differs from its results file
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "benchmarks", "figures.json")
VALUE = re.compile(r"<!-- value: (?P<file>[^:\s]+):(?P<path>[^:\s]+):(?P<fmt>[^\s]*) -->(?P<body>.*?)<!-- /value -->")
TABLE = re.compile(r"<!-- table: (?P<file>[^#\s]+)#(?P<index>\d+) -->\n(?P<body>.*?)<!-- /table -->", re.S)

__all__ = ["lookup", "markdown_tables", "render_markdown", "render_metadata", "update", "main"]


class FigureError(ValueError):
    """A figure whose results file, path or table does not exist."""


def _load_json(rel: str, where: str) -> object:
    path = os.path.join(ROOT, rel)
    if not os.path.isfile(path):
        raise FigureError(f"{where}: results file {rel} does not exist")
    with open(path) as f:
        return json.load(f)


def lookup(rel: str, dotted: str, where: str) -> object:
    """The value at ``dotted`` (keys separated by dots; list indices as numbers) in the JSON results file ``rel``."""
    node = _load_json(rel, where)
    for part in dotted.split("."):
        if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise FigureError(f"{where}: {rel} has no {dotted!r} (stopped at {part!r})")
    if isinstance(node, (dict, list)):
        raise FigureError(f"{where}: {rel}:{dotted} is not a single value")
    return node


def markdown_tables(text: str) -> list[str]:
    """The markdown tables of ``text`` (runs of lines starting with ``|``), each with its trailing newline."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current) + "\n")
            current = []
    if current:
        tables.append("\n".join(current) + "\n")
    return tables


def _table(rel: str, index: int, where: str) -> str:
    path = os.path.join(ROOT, rel)
    if not os.path.isfile(path):
        raise FigureError(f"{where}: results file {rel} does not exist")
    with open(path) as f:
        tables = markdown_tables(f.read())
    if not 1 <= index <= len(tables):
        raise FigureError(f"{where}: {rel} has {len(tables)} tables, not a table #{index}")
    return tables[index - 1]


def render_markdown(text: str, where: str) -> str:
    """``text`` with every value and table block filled from its results file."""

    def value(m: re.Match) -> str:
        v = lookup(m["file"], m["path"], where)
        body = format(v, m["fmt"]) if m["fmt"] else str(v)
        return f"<!-- value: {m['file']}:{m['path']}:{m['fmt']} -->{body}<!-- /value -->"

    def table(m: re.Match) -> str:
        return f"<!-- table: {m['file']}#{m['index']} -->\n{_table(m['file'], int(m['index']), where)}<!-- /table -->"

    return TABLE.sub(table, VALUE.sub(value, text))


def render_metadata(meta: dict, spec: dict, where: str) -> dict:
    """``meta`` with its ``eval_metrics`` filled from ``spec`` (the manifest's entry for this file)."""
    listed = set(meta.get("eval_metrics", {}))
    unknown = sorted(listed - set(spec))
    if unknown:
        raise FigureError(f"{where}: eval_metrics {unknown} have no source in benchmarks/figures.json")
    metrics = {}
    for key, src in spec.items():
        v = lookup(src["file"], src["path"], f"{where} eval_metrics.{key}")
        if not isinstance(v, (int, float)):
            raise FigureError(f"{where}: eval_metrics.{key} from {src['file']}:{src['path']} is not a number: {v!r}")
        metrics[key] = round(float(v), int(src.get("digits", 4)))
    return {**meta, "eval_metrics": metrics}


def markdown_files() -> list[str]:
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "bundles", "*", "docs", "*.md")))
    return [f for f in files if os.path.isfile(f)]


def update(check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, compare) every figure; return the files that differ from their results."""
    with open(MANIFEST) as f:
        manifest = json.load(f)
    stale = []
    for rel, spec in manifest.items():
        path = os.path.join(ROOT, rel)
        with open(path) as f:
            meta = json.load(f)
        new = render_metadata(meta, spec, rel)
        if new != meta:
            stale.append(rel)
            if not check:
                with open(path, "w") as f:
                    f.write(json.dumps(new, indent=4, ensure_ascii=False) + "\n")
    for meta_path in glob.glob(os.path.join(ROOT, "bundles", "*", "configs", "metadata.json")):
        rel = os.path.relpath(meta_path, ROOT)
        with open(meta_path) as f:
            if json.load(f).get("eval_metrics") and rel not in manifest:
                raise FigureError(f"{rel}: eval_metrics has no source in benchmarks/figures.json")
    for path in markdown_files():
        with open(path) as f:
            text = f.read()
        rel = os.path.relpath(path, ROOT)
        new = render_markdown(text, rel)
        if new != text:
            stale.append(rel)
            if not check:
                with open(path, "w") as f:
                    f.write(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report figures that differ from their results files")
    args = ap.parse_args(argv)
    try:
        stale = update(check=args.check)
    except FigureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.check and stale:
        print("figures differ from their results files (run python benchmarks/update_docs.py):", *stale, sep="\n  ")
        return 1
    print(
        ("checked" if args.check else "updated") + f": {len(stale)} file(s) {'differ' if args.check else 'rewritten'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

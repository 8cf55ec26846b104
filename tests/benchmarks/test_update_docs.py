"""Every figure that a README or a bundle's metadata.json quotes comes from a committed results file
(``benchmarks/update_docs.py``): the repository is in sync, and a figure that differs from its results file, a
results file or path that does not exist, or a metadata figure without a source is reported."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _module():
    spec = importlib.util.spec_from_file_location("update_docs", os.path.join(ROOT, "benchmarks", "update_docs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_repository_figures_match_their_results_files():
    mod = _module()
    assert mod.update(check=True) == []
    with open(mod.MANIFEST) as f:
        manifest = json.load(f)
    for rel, spec in manifest.items():
        with open(os.path.join(ROOT, rel)) as f:
            metrics = json.load(f)["eval_metrics"]
        assert set(metrics) == set(spec), rel
        for key, src in spec.items():  # an independent read of each results file
            with open(os.path.join(ROOT, src["file"])) as f:
                node = json.load(f)
            for part in src["path"].split("."):
                node = node[part]
            assert metrics[key] == round(float(node), src["digits"]), f"{rel} {key}"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    mod = _module()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "bundles" / "b" / "configs").mkdir(parents=True)
    (tmp_path / "bundles" / "b" / "docs").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text(json.dumps({"b": {"test": {"r2": 0.61234}}}))
    (tmp_path / "benchmarks" / "results" / "r.md").write_text(
        "# t\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\ntext\n\n| c |\n|---|\n| 3 |\n"
    )
    meta = tmp_path / "bundles" / "b" / "configs" / "metadata.json"
    meta.write_text(json.dumps({"version": "1", "eval_metrics": {"r2": 0.5}}))
    manifest = {
        "bundles/b/configs/metadata.json": {
            "r2": {"file": "benchmarks/results/r.json", "path": "b.test.r2", "digits": 3}
        }
    }
    (tmp_path / "benchmarks" / "figures.json").write_text(json.dumps(manifest))
    (tmp_path / "README.md").write_text(
        "R² <!-- value: benchmarks/results/r.json:b.test.r2:.2f -->0.99<!-- /value --> on test.\n\n"
        "<!-- table: benchmarks/results/r.md#2 -->\nold\n<!-- /table -->\n"
    )
    monkeypatch.setattr(mod, "ROOT", str(tmp_path))
    monkeypatch.setattr(mod, "MANIFEST", str(tmp_path / "benchmarks" / "figures.json"))
    return mod, tmp_path


def test_stale_figures_are_reported_then_rewritten(tree):
    mod, root = tree
    assert sorted(mod.update(check=True)) == ["README.md", "bundles/b/configs/metadata.json"]
    assert json.loads((root / "bundles/b/configs/metadata.json").read_text())["eval_metrics"] == {
        "r2": 0.5
    }  # check only
    mod.update()
    assert json.loads((root / "bundles/b/configs/metadata.json").read_text())["eval_metrics"] == {"r2": 0.612}
    text = (root / "README.md").read_text()
    assert "-->0.61<!-- /value -->" in text and "| c |\n|---|\n| 3 |\n<!-- /table -->" in text and "old" not in text
    assert mod.update(check=True) == []
    assert mod.main(["--check"]) == 0


def test_missing_sources_are_errors(tree):
    mod, root = tree
    meta = root / "bundles/b/configs/metadata.json"
    meta.write_text(json.dumps({"eval_metrics": {"r2": 0.5, "mae": 0.1}}))
    with pytest.raises(mod.FigureError, match=r"\['mae'\] have no source"):
        mod.update(check=True)
    meta.write_text(json.dumps({"eval_metrics": {"r2": 0.5}}))
    (root / "benchmarks/figures.json").write_text(
        json.dumps(
            {"bundles/b/configs/metadata.json": {"r2": {"file": "benchmarks/results/r.json", "path": "b.val.r2"}}}
        )
    )
    with pytest.raises(mod.FigureError, match="has no 'b.val.r2'"):
        mod.update(check=True)
    (root / "benchmarks/figures.json").write_text(json.dumps({}))
    with pytest.raises(mod.FigureError, match="eval_metrics has no source"):
        mod.update(check=True)
    meta.write_text(json.dumps({"eval_metrics": {}}))
    (root / "README.md").write_text("<!-- value: benchmarks/results/gone.json:a:.1f -->1<!-- /value -->\n")
    with pytest.raises(mod.FigureError, match="gone.json does not exist"):
        mod.update(check=True)
    (root / "README.md").write_text("<!-- table: benchmarks/results/r.md#3 -->\nx\n<!-- /table -->\n")
    with pytest.raises(mod.FigureError, match="has 2 tables, not a table #3"):
        mod.update(check=True)
    assert mod.main(["--check"]) == 1

"""Build hook: ship the bundles inside the wheel, as package data under ``monai_contrastive/_bundles``.

Metadata and dependencies are in setup.cfg. ``bundles/`` stays the one source of the bundles in the repository; a
(non-editable) ``pip install .`` copies each bundle's configs, docs, LICENSE and scripts into the installed package,
where ``monai_contrastive.bundles.bundles_dir()`` finds them. Training outputs (models, eval, runs, demo data, caches)
are never shipped.
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = ("models", "eval", "runs", "demo_data", ".cache", "__pycache__")


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies ``bundles/`` to ``<build_lib>/monai_contrastive/_bundles``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the checkout, whose bundles/ the CLI finds directly
        src = os.path.join(_HERE, "bundles")
        if not os.path.isdir(src):
            raise FileNotFoundError(f"{src} is missing: the bundles cannot be shipped (is MANIFEST.in complete?).")
        dst = os.path.join(self.build_lib, "monai_contrastive", "_bundles")
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*_SKIP, "*.pyc", ".tmp*"))


setup(cmdclass={"build_py": BuildPyWithBundles})

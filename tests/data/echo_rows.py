"""Reading a FileList.csv back in the data tests."""

from __future__ import annotations

import csv
import os


def read_rows(root: str) -> list[dict]:
    with open(os.path.join(root, "FileList.csv"), newline="") as f:
        return list(csv.DictReader(f))

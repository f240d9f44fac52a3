"""Experiments reproducing the papers' figures and tables (python -m jaxcd.experiments.<name>)."""
import csv
import os
from typing import Sequence


def save_table(out: str, stem: str, columns: Sequence[str], rows: list[dict],
               markdown: list[str]) -> tuple[str, str]:
  """Writes OUT/STEM.csv (every row, `columns` in order) and OUT/STEM.md (the given lines), the
  pair each experiment leaves; returns their paths."""
  os.makedirs(out, exist_ok=True)
  csv_path, md_path = os.path.join(out, f"{stem}.csv"), os.path.join(out, f"{stem}.md")
  with open(csv_path, "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(columns))
    wr.writeheader()
    wr.writerows(rows)
  with open(md_path, "w") as f:
    f.write("\n".join(markdown) + "\n")
  return csv_path, md_path

"""Experiments reproducing the papers' figures and tables (python -m jaxcd.experiments.<name>)."""
import csv
import os
from typing import Sequence

from jaxcd.errors import ConfigError


def parse_choices(text: str, known: Sequence[str], flag: str, other: str = "") -> list[str]:
  """A comma-separated subset of `known` (a flag's value), or one `--flag` error line that
  names `other` accepted values first."""
  out = [m.strip() for m in text.split(",") if m.strip()]
  bad = [m for m in out if m not in known]
  if bad or not out:
    raise ConfigError(f"--{flag}: choose {other}from {', '.join(known)} (comma-separated), "
                      f"got {text!r}")
  return out


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

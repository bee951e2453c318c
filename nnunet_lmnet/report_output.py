"""Report output: number formatting, Markdown tables, and files that are either complete or absent."""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import UserError


def is_nan(x) -> bool:
    try:
        return x is None or math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x, digits: int = 4) -> str:
    return "–" if is_nan(x) else f"{float(x):.{digits}f}"


def fmt_mean_std(mean, std, digits: int = 4) -> str:
    if is_nan(mean):
        return "–"
    if is_nan(std):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"


def fmt_p(p) -> str:
    if is_nan(p):
        return "–"
    p = float(p)
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}"


def fmt_count(n) -> str:
    """12345678 -> '12.35 M' (parameters / FLOPs)."""
    if n is None or is_nan(n):
        return "n/a"
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n:.0f}"


def md_table(header: list[str], rows: list[list[str]], align_right_from: int = 1) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    seps = [":--" if i < align_right_from else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserError(
            "output already exists: " + ", ".join(existing) + ". Pass --overwrite to replace it, or choose another "
            "output location."
        )


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``target`` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + "".join(target.suffixes[-1:]),
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def same_or_inside(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or lies inside ``b`` (both resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents

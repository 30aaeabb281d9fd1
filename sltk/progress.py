"""Progress bars for long work: tqdm's, drawn as widgets in a notebook and as text in a terminal."""

from __future__ import annotations


def bar(total: int, desc: str, unit: str = "req", initial: int = 0, enabled: bool = True):
    """A progress bar of `total` units, or None when progress is not to be shown."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

"""Progress bars for long work: tqdm's, drawn as widgets in a notebook and as text in a terminal.

`SLTK_PROGRESS=text` asks for text bars even inside a notebook kernel: `sltk demo` sets it so that
the kernels' bars stream to the terminal that runs the notebooks.
"""

from __future__ import annotations

import os

ENV = "SLTK_PROGRESS"
TEXT = "text"


def bar(total: int, desc: str, unit: str = "req", initial: int = 0, enabled: bool = True):
    """A progress bar of `total` units, or None when progress is not to be shown."""
    if not enabled:
        return None
    if os.environ.get(ENV) == TEXT:
        from tqdm.std import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=2.0)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

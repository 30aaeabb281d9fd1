"""Execute the numbered notebooks of a run, in order, with papermill (`sltk demo`, `make demo`).

00 and 01 once, 02 once per iteration (ITERATION = k), then 03. Each notebook calls the same
resumable steps as `sltk run`, so a finished step is read back, never computed twice; the
executed copies go into the run folder next to the data they describe.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LOOP = ("00_", "01_", "02_", "03_")  # what `sltk demo` runs; 04 evaluates on benchmark files


def plan(iterations: int, folder: Path = NOTEBOOKS, prefixes=LOOP) -> list[tuple[Path, dict, str]]:
    """(notebook, parameters, name of the executed copy) in the order they run."""
    books = [b for b in sorted(folder.glob("[0-9][0-9]_*.ipynb")) if not prefixes or b.name.startswith(prefixes)]
    if not books:
        wanted = "".join(f"{p}* " for p in prefixes)
        raise FileNotFoundError(f"No numbered notebooks {wanted}in {folder}; "
                                f"run from a checkout of the repository, naming notebooks 00 to 05.")
    out = []
    for book in books:
        if book.name.startswith("02_"):
            out += [(book, {"ITERATION": k}, f"{book.stem}_iter{k}.ipynb") for k in range(1, iterations + 1)]
        else:
            out.append((book, {}, book.name))
    return out


def run(preset: str, name: str, runs_dir: str | Path = "runs", model: str | None = None,
        folder: Path = NOTEBOOKS, prefixes=LOOP, log=print, stream: bool = True) -> Path:
    """Execute the notebooks whose names start with `prefixes`, for run `runs_dir/name`; returns the run folder.

    With `stream`, what the notebooks print, their progress bars (counts, tokens/s, ETA) included,
    goes to this process's stdout and stderr as it comes.
    """
    import papermill

    from . import progress
    from .config import preset as make_preset

    config = make_preset(preset, name=name, **({"model": model} if model else {}))
    run_folder = Path(runs_dir).resolve() / name
    out_dir = run_folder / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"PRESET": preset, "RUN_NAME": name, "RUNS_DIR": str(run_folder.parent), "MODEL": model or ""}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if stream:
        os.environ[progress.ENV] = progress.TEXT  # the kernels inherit it: text bars, streamed here
    streams = {"stdout_file": sys.stdout, "stderr_file": sys.stderr} if stream else {}
    for book, extra, copy in plan(config.iterations, folder, prefixes):
        start = time.perf_counter()
        label = book.stem + (f" (iteration {extra['ITERATION']})" if extra else "")
        log(f"notebook {label} ...")
        try:
            papermill.execute_notebook(str(book), str(out_dir / copy), parameters={**params, **extra},
                                       cwd=str(book.parent), kernel_name="python3", progress_bar=False,
                                       # the kernel's start-up warning about its TCP transport is not news here
                                       extra_arguments=["--IPKernelApp.log_level=ERROR"], **streams)
        except papermill.PapermillExecutionError as exc:
            raise RuntimeError(f"notebook {label} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                               f"(the executed copy with the traceback: {out_dir / copy})") from None
        log(f"notebook {label} done in {time.perf_counter() - start:.0f} s -> {out_dir / copy}")
    return run_folder

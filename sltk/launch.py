"""Training steps in several processes: `accelerate launch` of `sltk train-role`, its output shown here.

With `train.processes` above 1 or a `train.accelerate_config`, a run's training step starts
`accelerate launch ... -m sltk.cli train-role` and waits for it. Every process loads the run's base
model on its own device and trains the role on its share of each step's batches (DDP by default;
FSDP or DeepSpeed ZeRO as the configuration file says); the main process writes the adapter. The
step is then marked done here as any other, so a killed launch resumes from its checkpoint when
the run is started again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .config import TrainConfig, accelerate_file
from .progress import ENV as PROGRESS_ENV
from .progress import TEXT


class LaunchError(RuntimeError):
    """The launched training failed; the message holds the end of its output."""


def wanted(train: TrainConfig) -> bool:
    """Whether this training runs in launched processes rather than in this one."""
    return train.processes > 1 or bool(train.accelerate_config)


def launcher(processes: int, accelerate_config: str | None = None) -> list[str]:
    """`accelerate launch` with `processes` processes, or as the configuration file says."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        launch += ["--config_file", str(accelerate_file(accelerate_config))]
        return launch + (["--num_processes", str(processes)] if processes > 1 else [])
    # Several processes on one machine; on a machine without CUDA accelerate's "multi_gpu" runs on gloo.
    return launch + ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no"]


def command(folder: Path, role: str, start: int, data: Path, out: Path, settings: TrainConfig) -> list[str]:
    """The command that trains `role` of the run in `folder` from iteration `start`'s roles, launched as
    `settings.processes` and `settings.accelerate_config` say."""
    return launcher(settings.processes, settings.accelerate_config) + [
        "-m", "sltk.cli", "train-role", "--folder", str(folder), "--role", role, "--start", str(start),
        "--data", str(data), "--out", str(out), "--settings", json.dumps(asdict(settings))]


def _ends_with_this_process() -> None:
    """In the launched process, before it starts: a SIGTERM when this one dies (Linux), so that a killed
    run leaves no training behind to write into the checkpoint its next start resumes from; the
    launcher passes the signal on to its processes."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def train(folder: Path, role: str, start: int, data: Path, out: Path, settings: TrainConfig) -> dict:
    """Run the launched training to its end, its output (progress bars included) passed through here.

    Returns the adapter's training statistics; raises LaunchError when a process failed.
    """
    from .train import MARKER

    cmd = command(folder, role, start, data, out, settings)
    env = {**os.environ, PROGRESS_ENV: TEXT, "TOKENIZERS_PARALLELISM": "false"}
    tail = b""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          preexec_fn=_ends_with_this_process) as process:
        while chunk := os.read(process.stdout.fileno(), 65536):
            sys.stderr.write(chunk.decode(errors="replace"))  # streams into a notebook's cell too
            sys.stderr.flush()
            tail = (tail + chunk)[-4000:]
        code = process.wait()
    if code != 0 or not (out / MARKER).is_file():
        raise LaunchError(
            f"Training {role} in several processes failed (exit {code}); run the same command again to resume "
            f"from its checkpoint, or set train.processes=1. The launch was: {' '.join(cmd[:12])} …\n"
            + tail.decode(errors="replace")[-2000:])
    return json.loads((out / MARKER).read_text())

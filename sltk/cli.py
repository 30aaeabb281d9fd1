"""The `sltk` command."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from pathlib import Path

from . import config as config_module
from .text import LANGUAGES


def _prepare(args) -> int:
    from . import embedded

    start = time.perf_counter()
    folder = embedded.ensure_checkpoint(force=args.force)
    print(f"embedded model ready: {folder} ({time.perf_counter() - start:.1f} s)")
    return 0


def _drafts(args) -> int:
    import pandas as pd

    from . import text
    from .backends import HFBackend
    from .chat import ChatRequest, Sampling
    from .models import add_roles, load_base
    from .records import read_prompts

    seeds = read_prompts(Path(args.seeds))[: args.n]
    start = time.perf_counter()
    loaded = load_base(args.model, quantization=None if args.quantization == "none" else args.quantization)
    add_roles(loaded)
    print(f"loaded {loaded.source} ({loaded.quantization or 'unquantised'}, {loaded.dtype}, {loaded.device}) "
          f"with roles {loaded.roles} in {time.perf_counter() - start:.1f} s")
    requests = [ChatRequest([{"role": "user", "content": s["query"]}], role="generator", id=s["id"]) for s in seeds]
    backend = HFBackend(loaded, batch_size=args.batch_size)
    results = backend.generate(requests, Sampling(max_new_tokens=args.max_new_tokens), seed=args.seed, desc="drafts")
    rows = []
    for seed, out in zip(seeds, results):
        rows.append({
            "id": seed["id"], "kind": seed.get("kind", ""), "words": text.count_words(out.text),
            "tokens": out.tokens, "finish": out.finish_reason,
            "filters": ",".join(text.check_filters(out.text)) or "pass",
        })
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    stats = backend.last_stats
    print(f"\nwords: mean {table.words.mean():.0f}, median {table.words.median():.0f}, max {table.words.max()}; "
          f"{stats['tokens']} tokens in {stats['seconds']:.1f} s = {stats['tokens_per_second']:.1f} tokens/s")
    return 0


def _parse_value(raw: str):
    """A --set value: YAML scalars and lists (numbers, true/false, null, [a, b]); "3e-4" is a number too
    (YAML 1.1 reads an exponent without a dot as text)."""
    import yaml

    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            pass
    return value


def _report(pipeline, start: float, table) -> None:
    from .analysis import iteration_table, markdown

    folder, config = pipeline.folder, pipeline.config
    stats = [pipeline.stats(k) for k in range(1, config.iterations + 1)]
    print(f"\nrun {folder} finished in {time.perf_counter() - start:.0f} s\n")
    print("Iterations (counts through the steps; growth = mean words(extended) / words(draft) of accepted ones):")
    print(markdown(iteration_table(stats)))
    print(f"Held-out prompts ({folder / 'eval' / 'growth.csv'}): base model vs each iteration's Generator")
    print(markdown(table))


def _demo(args) -> int:
    from . import heldout, notebooks
    from .config import preset
    from .pipeline import Pipeline

    start = time.perf_counter()
    prefixes = tuple(f"{n}_" for n in args.notebooks) if args.notebooks else notebooks.LOOP
    folder = notebooks.run(args.preset, args.name, args.runs_dir, args.model, prefixes=prefixes)
    config = preset(args.preset, name=args.name, **({"model": args.model} if args.model else {}))
    pipeline = Pipeline(config, folder, progress=False)
    _report(pipeline, start, heldout.evaluate(pipeline))  # read back: notebook 03 has evaluated
    print(f"Executed notebooks: {folder / 'notebooks'}")
    print(f"Figures: {folder / 'figures'}")
    return 0


def _eval(args) -> int:
    from .analysis import markdown
    from .config import Config
    from .evaluate import BenchmarkSettings, run
    from .pipeline import Pipeline

    folder = Path(args.runs_dir) / args.run
    if not (folder / "config.yaml").exists():
        raise FileNotFoundError(f"No run at {folder} (no config.yaml): start one with `sltk run --name {args.run}`.")
    pipeline = Pipeline(_where(Config.load(folder / "config.yaml"), args), folder)
    settings = BenchmarkSettings(benchmark=args.benchmark, subset=args.subset, max_length=args.max_length,
                                 lang=args.lang, max_new_tokens=args.max_new_tokens, models=tuple(args.models or ()),
                                 judge=args.judge, seed=args.seed, judge_tries=args.judge_tries,
                                 judge_max_new_tokens=args.judge_max_new_tokens, judge_mode=args.judge_mode)
    table = run(pipeline, settings)
    print(markdown(table))
    print(f"Results, outputs and figures: {folder / 'bench'}")
    return 0


def _repair(args) -> int:
    from . import records

    folder = Path(args.runs_dir) / args.name
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"No run at {folder} (no manifest.json); check --name and --runs-dir.")
    moved = records.repair(folder)
    for name, n in moved.items():
        print(f"{folder / name}: {n} damaged line(s) set aside in {folder / name}.damaged")
        if Path(name).name == "queries.jsonl":
            print("  queries come in rounds and are not written again one by one: restore them from the "
                  ".damaged file, or the run stops and says how to start that iteration afresh.")
    print(f"{sum(moved.values())} damaged line(s) in {len(moved)} file(s). "
          + (f"Run the same command as before to write them again (e.g. `sltk run --name {args.name}`)."
             if moved else "Nothing to repair."))
    return 0


def _check_run_name(name: str, runs_dir: str, flag: str) -> None:
    """A run name is one folder inside the runs folder: no path, no `..`, no link that leads outside."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise ValueError(f"{flag} {name!r}: a run name is a plain folder name (letters, digits, '.', '_', '-'); "
                         f"use --runs-dir to put runs elsewhere.")
    root = Path(runs_dir).resolve()
    if not (root / name).resolve().is_relative_to(root):
        raise ValueError(f"{flag} {name!r}: {Path(runs_dir) / name} leads outside {runs_dir} (a link?).")


def _config(args):
    """The run's configuration: --config, the run folder's own (resuming), or the preset with --set."""
    from .config import Config, preset

    changes = {}
    for item in args.set or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
        key, raw = item.split("=", 1)
        changes[key.strip()] = _parse_value(raw)
    folder = Path(args.runs_dir) / args.name
    if args.config:
        return _where(Config.load(args.config), args), folder
    if (folder / "config.yaml").exists() and not args.preset_given:
        if changes:
            raise ValueError(f"--set with the existing run {folder}: its settings are {folder / 'config.yaml'}. "
                             "Resume it without --set, or start another --name (with --preset) to change them.")
        return _where(Config.load(folder / "config.yaml"), args), folder
    return _where(preset(args.preset, name=args.name, **changes), args), folder


def _where(config, args):
    """The configuration with the command line's --backend, --base-url, --served-model, --adapters,
    --train-processes and --accelerate-config: where a run computes, which a run may change between
    starts (these flags work on a run that exists too)."""
    flags = {"serve.backend": getattr(args, "backend", None), "serve.base_url": getattr(args, "base_url", None),
             "serve.model": getattr(args, "served_model", None), "serve.adapters": getattr(args, "adapters", None),
             "train.processes": getattr(args, "train_processes", None),
             "train.accelerate_config": getattr(args, "accelerate_config", None)}
    changes = {k: v for k, v in flags.items() if v is not None}
    if changes.get("serve.base_url") and "serve.backend" not in changes:
        changes["serve.backend"] = "openai"
    return _with(config, changes) if changes else config


def _where_flags(p) -> None:
    g = p.add_argument_group("generation on a server")
    g.add_argument("--backend", choices=["hf", "openai"], help="hf: in this process; openai: an OpenAI-compatible "
                   "server (vLLM, SGLang, llama.cpp, transformers serve)")
    g.add_argument("--base-url", help="the server, e.g. http://localhost:8000/v1 (implies --backend openai)")
    g.add_argument("--served-model", help="the base model's name on the server (default: the run's model)")
    g.add_argument("--adapters", choices=["load", "path", "manual"],
                   help="how trained adapters reach the server: load (vLLM's runtime LoRA API, the default), path "
                        "(a folder the server loads by its path: transformers serve), manual (you load them)")
    g = p.add_argument_group("training in several processes (accelerate launch)")
    g.add_argument("--train-processes", type=int, metavar="N",
                   help="train each role in N processes, one per GPU (on a CPU: gloo); a step is then "
                        "train.grad_accum batches in every process")
    g.add_argument("--accelerate-config", metavar="FILE",
                   help="an accelerate configuration for the training steps: ddp, fsdp, zero3 (sltk's, in "
                        "data/accelerate/) or a file `accelerate config` wrote")


def _run(args) -> int:
    from .pipeline import Pipeline

    config, folder = _config(args)
    start = time.perf_counter()
    pipeline = Pipeline(config, folder)
    _report(pipeline, start, pipeline.run())
    return 0


def _agentwrite(args) -> int:
    from . import heldout, records
    from .analysis import markdown
    from .pipeline import Pipeline

    config, folder = _config(args)
    if args.queries:
        config = _with(config, {"agentwrite.queries": str(Path(args.queries).resolve())})
    start = time.perf_counter()
    pipeline = Pipeline(config, folder)
    prompts = pipeline.agentwrite_prompts()  # checked before any model loads
    if not prompts:
        raise ValueError("AgentWrite has no prompts: check agentwrite.queries and languages.")
    stats = pipeline.agentwrite()
    print(f"AgentWrite: {stats['ok']}/{stats['prompts']} texts pass the filters (failed: {stats['failed']}); "
          f"words {stats['words']}; sections rewritten {stats['sections_rewritten']}, cut {stats['sections_cut']}")
    data = records.read_jsonl(folder / "agentwrite" / "dataset.jsonl")
    if not data:
        raise RuntimeError(f"No AgentWrite text passed the filters ({folder / 'agentwrite' / 'texts.jsonl'}).")
    if args.no_train:
        return 0
    adapter = pipeline.agentwrite_adapter
    info = pipeline.train_generator(data, adapter, "agentwrite/train_generator", config.agentwrite.train_epochs)
    print(f"Generator trained on {len(data)} AgentWrite texts: {info}")
    table = heldout.evaluate(pipeline)  # with the AgentWrite Generator, now that the run has one
    print(f"\nHeld-out prompts ({folder / 'eval' / 'growth.csv'}), ratios to the base with 95% bootstrap intervals:")
    print(markdown(table))
    print(f"finished in {time.perf_counter() - start:.0f} s")
    return 0


def _train(args) -> int:
    from . import heldout, records
    from .pipeline import Pipeline
    from .train import TrainDataError, encode_check

    config, folder = _config(args)
    data = records.read_jsonl(Path(args.data))
    problems = encode_check(data)
    if problems:
        raise TrainDataError(f"{args.data}: " + "; ".join(problems[:5]) +
                             " Each line needs {'messages': [{'role': 'user', ...}, {'role': 'assistant', ...}]}.")
    if args.loss:
        config = _with(config, {"train.loss": args.loss})
    label = args.label or Path(args.data).stem
    out = Path(args.out) if args.out else folder / "trained" / label / "generator"
    pipeline = Pipeline(config, folder)
    info = pipeline.train_generator(data, out, f"train/{label}", args.epochs)
    print(f"Generator adapter: {out} ({info})")
    if args.eval:
        from .analysis import markdown

        print(markdown(heldout.evaluate(pipeline, extra={label: out})))
    return 0


def _train_role(args) -> int:
    import json

    from . import records
    from .config import Config, TrainConfig
    from .pipeline import Pipeline
    from .train import train_role

    folder = Path(args.folder)
    pipeline = Pipeline(Config.load(folder / "config.yaml"), folder)
    pipeline.load_roles_of(args.start)
    settings = TrainConfig(**json.loads(args.settings))
    train_role(pipeline.loaded, args.role, records.read_jsonl(Path(args.data)), Path(args.out), settings, resume=True)
    return 0


def _dpo(args) -> int:
    import json

    from . import records
    from .pipeline import Pipeline

    folder = Path(args.runs_dir) / args.name
    if not (folder / "config.yaml").exists():
        raise FileNotFoundError(f"No run at {folder} (no config.yaml): "
                                f"start one with `sltk agentwrite --name {args.name}`.")
    adapter = Path(args.adapter) if args.adapter else folder / "agentwrite" / "adapters" / "generator"
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no adapter (adapter_config.json): "
                                "train one first, or pass --adapter.")
    lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else ()
    prompts = records.read_jsonl(Path(args.prompts), fields={}) if args.prompts else None  # any file name
    pipeline = Pipeline(_config(args)[0], folder)
    stats = pipeline.preference_pairs(adapter, args.k, lengths, args.judge, prompts)
    print(json.dumps(stats, indent=2))
    print(f"DPO pairs (TRL's conversational format): {folder / 'dpo' / 'pairs.jsonl'}")
    return 0


def _with(config, changes: dict):
    from .config import merge

    return merge(config, changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sltk", description="Self-Lengthen toolkit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="convert the embedded model into the cache (once)")
    p.add_argument("--force", action="store_true", help="convert again even if a copy exists")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("demo", help="the main job: execute the notebooks on a preset, then print the growth table")
    p.add_argument("--preset", default="cpu-demo", help="smoke, cpu-demo, colab-t4, a100 or paper")
    p.add_argument("--name", default="demo", help="run name: the folder under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--model", default=None, help="another model than the preset's")
    p.add_argument("--notebooks", nargs="+", metavar="NN", default=None,
                   help="the numbered notebooks to execute (default: 00 01 02 03); e.g. `--notebooks 05` "
                        "adds AgentWrite to a finished demo run and compares both ways")
    p.set_defaults(func=_demo)

    p = sub.add_parser("drafts", help="load both roles and draft answers for a few seed queries")
    p.add_argument("--model", default="embedded", help="'embedded', a hub id or a local folder")
    p.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    p.add_argument("--seeds", default=str(config_module.DATA / "seed_en.jsonl"))
    p.add_argument("-n", type=int, default=8, help="number of seed queries")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_drafts)

    p = sub.add_parser("run", help="run the Self-Lengthen loop (resumes a run folder that exists)")
    p.add_argument("--preset", default="cpu-demo", help="smoke, cpu-demo, colab-t4, a100 or paper")
    p.add_argument("--name", default="demo", help="run name: the folder under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--config", help="a config.yaml to use instead of a preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change one setting, e.g. train.lr=3e-4")
    _where_flags(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("agentwrite", help="LongWriter's AgentWrite: data from the base model, a Generator trained "
                                          "on it, and the held-out table against the base")
    p.add_argument("--preset", default="cpu-demo", help="smoke, cpu-demo, colab-t4, a100 or paper")
    p.add_argument("--name", default="demo", help="run name: the folder under --runs-dir (a Self-Lengthen run's "
                                                 "name uses its iteration-1 queries)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--config", help="a config.yaml to use instead of a preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change one setting, e.g. agentwrite.sections=6")
    p.add_argument("--queries", help="a JSONL of {'id', 'query'} to write for (default: the run's or the seeds)")
    p.add_argument("--no-train", action="store_true", help="make the data only")
    _where_flags(p)
    p.set_defaults(func=_agentwrite)

    p = sub.add_parser("train", help="train a Generator adapter on long-output records (LongWriter-6k 'messages')")
    p.add_argument("--data", required=True, help="JSONL of {'messages': [user, assistant]} records")
    p.add_argument("--preset", default="cpu-demo", help="smoke, cpu-demo, colab-t4, a100 or paper")
    p.add_argument("--name", default="train", help="run name: the folder under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--config", help="a config.yaml to use instead of a preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change one setting, e.g. train.lr=3e-4")
    p.add_argument("--out", help="adapter folder (default: <run>/trained/<data name>/generator)")
    p.add_argument("--epochs", type=int, help="epochs (default: train.epochs)")
    p.add_argument("--label", help="the model's name in the run (default: the data file's name)")
    p.add_argument("--loss", choices=["token", "sequence"],
                   help="token mean over the batch (default) or per-sequence mean")
    p.add_argument("--eval", action="store_true", help="then answer the held-out prompts against the base")
    _where_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-role", help="train one role of a run: what each process of a launched training "
                                          "step runs (train.processes > 1)")
    p.add_argument("--folder", required=True, help="the run folder")
    p.add_argument("--role", required=True, choices=["generator", "extender"])
    p.add_argument("--start", type=int, required=True, help="the iteration whose roles are trained further (0: fresh)")
    p.add_argument("--data", required=True, help="JSONL of {'messages': [...]} records")
    p.add_argument("--out", required=True, help="the adapter folder")
    p.add_argument("--settings", required=True, help="the train settings, as JSON")
    p.set_defaults(func=_train_role)

    p = sub.add_parser("dpo", help="preference pairs from a trained Generator, in TRL's DPO format")
    p.add_argument("--name", default="demo", help="run name: the folder under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--adapter", help="the Generator adapter folder (default: the run's AgentWrite Generator)")
    p.add_argument("-k", type=int, default=4, help="answers sampled per prompt")
    p.add_argument("--lengths", default="500,1000,1500",
                   help="required lengths (words) given in turn to prompts that have none")
    p.add_argument("--prompts", help="a JSONL of {'id', 'query'[, 'length']} (default: the run's AgentWrite prompts)")
    p.add_argument("--judge", action="store_true", help="quality from the run's base model as a forced-choice judge "
                                                        "(else the repetition and ending proxy)")
    _where_flags(p)
    p.set_defaults(func=_dpo, preset="cpu-demo", config=None, set=None)

    p = sub.add_parser("repair", help="set a run's damaged records aside, to be written again when it resumes")
    p.add_argument("--name", default="demo", help="run name: the folder under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.set_defaults(func=_repair)

    p = sub.add_parser("eval", help="evaluate a run's base model and Generators on a benchmark file")
    p.add_argument("--name", "--run", dest="run", default="demo", help="run name: the folder under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--benchmark", required=True,
                   help="a benchmark file (longbench_write[_en].jsonl, longwrite_ruler.jsonl, LonGen.jsonl) or its "
                        "name, looked up in $SLTK_EVAL_SETS")
    p.add_argument("--subset", type=int, help="evaluate the first N items (after the filters)")
    p.add_argument("--max-length", type=int, help="keep items whose required length is below this")
    p.add_argument("--lang", choices=LANGUAGES, help="keep items of this output language")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--models", nargs="*", help="base, generator_iter_1, ... (default: all)")
    p.add_argument("--judge", action="store_true", help="LLM-as-judge quality with the run's base model (weak)")
    p.add_argument("--judge-tries", type=int, default=5, help="tries per item until the judge's reply parses")
    p.add_argument("--judge-max-new-tokens", type=int, default=1024)
    p.add_argument("--judge-mode", choices=config_module.JUDGE_MODES, default="sample",
                   help="sample: the judge writes JSON scores; choice: each score is the most probable value "
                        "(forced choice, for a weak local judge)")
    p.add_argument("--seed", type=int, default=0)
    _where_flags(p)
    p.set_defaults(func=_eval)

    args = parser.parse_args(argv)
    args.preset_given = any(a.startswith("--preset") for a in (argv if argv is not None else sys.argv[1:]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        for flag in ("name", "run"):
            if getattr(args, flag, None) is not None:
                _check_run_name(getattr(args, flag), args.runs_dir, f"--{flag}")
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"sltk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine: a full disk, a folder that cannot be written
        print(f"sltk {args.command}: error: {_machine_error(exc)}", file=sys.stderr)
        return 2


def _machine_error(exc: OSError) -> str:
    """What a failed write means and what to do: everything written before it is kept."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device{where}. Free some space (or move the run with --runs-dir) and run "
                "the same command again: every record written so far is kept and the run resumes.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write{where}: {exc.strerror}. Make the runs folder writable, or choose another with "
                "--runs-dir.")
    return f"{exc.strerror or exc}{where}."


if __name__ == "__main__":
    sys.exit(main())

"""One typed configuration for a Self-Lengthen run, with the upstream values as defaults, and presets.

Every number of the method is a field here; a preset only changes fields. A run folder keeps the
resolved configuration in `config.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .chat import Sampling
from .records import write_atomic
from .text import FILTERS, LANGUAGES

DATA = Path(__file__).resolve().parent.parent / "data"


# How a judge scores: "sample" (it writes its verdict or scores, as upstream) or "choice" (a forced
# choice: the most probable of the allowed answers, for a judge too weak to write them).
JUDGE_MODES = ("sample", "choice")


@dataclass
class QueryConfig:
    """Self-instruct query synthesis (METHOD 1.2.1)."""

    per_iteration: int = 5000
    examples: int = 2  # seeds shown in the pre-filled list
    max_tries: int = 10  # per slot
    min_words: int = 3  # accepted when min_words < words < max_words
    max_words: int = 500
    judge: bool = True  # the base model's yes/no suitability check
    judge_mode: str = "sample"  # "sample" (upstream) or "choice" (forced choice between yes and no)
    near_duplicate: float = 0.6  # word-trigram Jaccard similarity counted as a duplicate
    grow_seed_pool: bool = False  # add accepted queries to the pool of examples
    max_new_tokens: int = 256

    def __post_init__(self):
        if self.judge_mode == "logprob":  # the forced choice's former name, in older run folders
            self.judge_mode = "choice"


@dataclass
class DraftConfig:
    """Drafts by the Generator (METHOD 1.2.2)."""

    per_query: int = 2
    max_tries: int = 20
    length_biased: bool = True  # length-biased sampling of the drafts before extension
    # The drafts' (and the final harvest's) own token cap (None: sampling.max_new_tokens). A draft that
    # reaches it fails the ending check, so this also bounds the length of the drafts that go on.
    max_new_tokens: int | None = None


@dataclass
class ExtendConfig:
    """Two-stage extension with micro-rounds (METHOD 1.2.4)."""

    attempts: int = 2  # independent attempts per kept draft
    micro_rounds: int = 3
    min_growth: float = 1.2  # an attempt succeeds when words(best) > min_growth * words(draft)
    max_tries: int = 20
    keep_fraction: float = 2 / 3  # of stage 1's paragraphs kept before stage 2
    length_biased: bool = True  # length-biased sampling of the extended texts before SFT
    # Drop a stage output's opening/closing line that talks about the text ("Here is the expanded
    # version:"), which would otherwise fail the whole candidate on the meta-commentary filter.
    strip_meta: bool = True
    # Cap each stage's new tokens at this multiple of its input text (None: the sampling cap only).
    # A stage that writes far more than its input has usually derailed; the cap frees its batch slot.
    stage_cap: float | None = None
    # Stage 2 may not end before the candidate (pre-fill + its text) would reach this multiple of
    # the current text's words (None: it ends when it likes, as upstream). A small model given the
    # pre-fill tends to add a few sentences and sign off, shorter than the text it was to expand.
    stage2_min_growth: float | None = None
    # Salvage a candidate that fails the filters: keep its leading paragraphs up to the first repeated
    # n-gram, back to the last one that ends a sentence (text.clean_prefix), and check that again.
    # Off upstream; a small model held on by the floor above often loops or runs out only late.
    salvage: bool = False
    keep_trace: bool = False  # store each micro-round's texts (half, stage 1, kept, stage 2) with the record


@dataclass
class LoraSettings:
    """LoRA of both roles (METHOD 1.2.6)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "all-linear"
    top_layers: int | None = None  # adapters on the last N layers only (None: all layers, upstream)


LOSSES = ("token", "sequence")


@dataclass
class TrainConfig:
    """SFT of each role (METHOD 1.2.6), upstream values by default: cosine schedule, 10% warm-up,
    batch 1, token-mean loss.

    A step is one optimizer update over `grad_accum` batches. A batch holds `batch_size`
    sequences, or, when `batch_tokens` is set, as many similar-length sequences as fit in that
    many padded tokens. `save_every` (steps) adds checkpoints between the end-of-epoch ones.
    """

    epochs: int = 4
    extender_epochs: int | None = None  # None: the same as `epochs`
    lr: float = 1e-4
    scheduler: str = "cosine"  # any name transformers.get_scheduler knows
    warmup_ratio: float = 0.1
    batch_size: int = 1
    batch_tokens: int | None = None
    grad_accum: int = 1
    max_seq_len: int = 16384
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True
    seed: int = 0  # data order and adapter initialisation; a run trains with its own `seed`
    save_every: int | None = None  # steps between checkpoints (None: at the end of each epoch)
    log_every: int = 10
    line_keep_prob: float = 0.8  # random line removal in the Extender's input
    # "token": the mean over every target token of the step (LongWriter, METHOD 2.3); "sequence": the mean
    # of each sequence's own token mean, which gives a long answer's tokens less weight each.
    loss: str = "token"
    # Where training runs (not part of a run's identity): above 1 process, or with an accelerate
    # configuration file (DDP, FSDP, DeepSpeed), each training step is `accelerate launch`ed. A step is
    # then `grad_accum` batches in every process.
    processes: int = 1
    accelerate_config: str | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"train loss {self.loss!r}: use one of {', '.join(LOSSES)}.")


@dataclass
class FinalConfig:
    """The final long-output dataset (METHOD 1.6)."""

    harvest_per_query: int = 2
    min_words: int = 2000
    max_words: int = 8000


@dataclass
class AgentWriteConfig:
    """LongWriter's AgentWrite: plan the piece, then write it section by section (METHOD 2.1).

    The defaults are LongWriter's: its plan format (one line per section, main point and word
    count, each 200-1,000 words), up to 50 sections, every call seeing the whole text so far.
    The other switches are for models that repeat themselves across sections.
    """

    # A JSONL of {"id", "query"}; None: the run's queries of every iteration that made them, else the seeds.
    queries: str | None = None
    prompts: int = 0  # the first N prompts (0: all)
    # "longwriter": a main point and word count a line; "outline": numbered headings, pre-filled with "1."
    plan_style: str = "longwriter"
    sections: int = 6  # sections asked for by the "outline" plan
    min_sections: int = 1  # a plan with fewer usable lines is planned again (up to plan_tries)
    max_sections: int = 50  # LongWriter drops longer plans; sltk keeps their first max_sections lines
    plan_tries: int = 3
    plan_temperature: float = 1.0
    plan_max_new_tokens: int = 4096
    words_per_section: int = 300  # for a plan line that gives no word count
    min_section_words: int = 200  # a plan's word counts are clamped to [min, max]
    max_section_words: int = 1000
    section_cap: float = 2.0  # a section's token cap, as a multiple of its word count in tokens
    parallel: bool = False  # "+Parallel": every section from the plan alone, all at once
    # Words of the text so far shown to each call (None: all of it, as upstream); the front is left out,
    # with a marker. The model's context bounds it in any case.
    context_words: int | None = None
    # Write a section again (a new seed) while it repeats an n-gram of itself or of the text so far,
    # up to this many more tries; then keep its paragraphs before the first repeat (0: upstream).
    section_tries: int = 0
    cut_repeats: bool = False
    # Each section under a markdown heading taken from its plan line (the assembled text's layout only).
    headings: bool = False
    # The model's answer must not be shorter than this to be kept (LongWriter drops short outputs).
    min_words: int = 0
    train_epochs: int | None = None  # epochs of the Generator trained on this data (None: train.epochs)


@dataclass
class EvalConfig:
    """The held-out evaluation of a run (`eval.*`): the base, the control arm and each Generator on
    never-trained prompts (`sltk eval` on the benchmarks takes `evaluate.BenchmarkSettings`)."""

    prompts: int = 0  # 0 = all held-out prompts
    max_new_tokens: int = 2048
    control: bool = True  # answer also with an untrained adapter (the base's weights): the table's control arm


@dataclass
class ServeConfig:
    """Where generation runs: in this process ("hf"), or on an OpenAI-compatible server ("openai": vLLM,
    SGLang, llama.cpp, `transformers serve`). Training always runs here, on `model`. These settings say
    where a run computes, not what it computes: a run can change them and resume."""

    backend: str = "hf"
    base_url: str | None = None  # e.g. http://localhost:8000/v1
    model: str | None = None  # the base model's name on the server (default: `model`, or the embedded folder)
    # How a trained adapter reaches the server: "load" through vLLM's runtime LoRA API, "path" as a folder the
    # server loads by its path (`transformers serve`), "manual" by you (the run stops and names them).
    adapters: str = "load"
    concurrency: int = 8  # requests in flight
    timeout: float = 600.0  # seconds per request
    retries: int = 4  # per request, on connection errors, timeouts, 429 and 5xx
    context: int | None = None  # the server's max model length: caps each request's max_tokens
    extra_body: dict = field(default_factory=dict)  # merged into every request (a server's own options)


@dataclass
class Config:
    """Everything a run needs; presets change fields of it."""

    name: str = "run"
    model: str = "embedded"
    quantization: str | None = "nf4"
    dtype: str | None = None
    # Generation's KV cache dtype when narrower than the model's (e.g. "bfloat16" under float32 weights)
    kv_cache_dtype: str | None = None
    device: str | None = None
    # Run the Python code a hub model ships with its weights: only for a model you trust.
    trust_remote_code: bool = False
    iterations: int = 3
    seed: int = 0
    languages: tuple[str, ...] = LANGUAGES
    seeds: tuple[str, ...] = (str(DATA / "seed_en.jsonl"), str(DATA / "seed_zh.jsonl"))
    held_out: tuple[str, ...] = (str(DATA / "eval_en.jsonl"),)
    batch_size: int = 32
    filters: tuple[str, ...] = FILTERS  # applied to drafts and extensions
    # work items per generation call of the loop's steps and AgentWrite; a killed run redoes at most one
    # chunk (held-out answers and DPO samples are written one by one as they finish)
    chunk: int = 128
    sampling: Sampling = field(default_factory=Sampling)
    queries: QueryConfig = field(default_factory=QueryConfig)
    drafts: DraftConfig = field(default_factory=DraftConfig)
    extend: ExtendConfig = field(default_factory=ExtendConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    agentwrite: AgentWriteConfig = field(default_factory=AgentWriteConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> None:
        """Write the configuration as YAML, atomically (a crash leaves the old file or the new one)."""
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        return check(_build(cls, data, "config"))

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ConfigError(ValueError):
    """A setting that cannot work: its dotted name, the value, what it must be."""


def _build(cls, data: dict, where: str):
    """Build dataclass `cls` from a nested dict, refusing unknown keys and wrong types with their dotted name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; valid: {sorted(fields)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        default = getattr(defaults, name)
        key = f"{where}.{name}".removeprefix("config.")
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, key)
        elif isinstance(default, tuple) or _annotation(fields[name]).startswith("tuple"):
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key} = {value!r}: expected a list, e.g. [{value!r}]")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _typed(key, value, _annotation(fields[name]))
    return cls(**kwargs)


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _annotation(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _typed(key: str, value, annotation: str):
    """`value` checked against a simple annotation ("int", "float | None", ...); ints pass as floats."""
    names = [t.strip() for t in annotation.split("|")]
    if value is None and "None" in names:
        return value
    for name in names:
        kind = _TYPES.get(name)
        if kind is None:
            continue
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if isinstance(value, int) else value
        if kind is str and isinstance(value, str):
            return value
    if not any(n in _TYPES for n in names):
        return value  # a type this check does not know
    raise ConfigError(f"{key} = {value!r}: expected {annotation.replace('None', 'null')}, got {type(value).__name__}")


def _positive(v):
    return v is None or v > 0


# Counts that must be at least 1, and amounts that cannot be negative.
AT_LEAST_ONE = (
    "iterations", "batch_size", "chunk", "sampling.max_new_tokens", "sampling.loop_ngram", "queries.per_iteration",
    "queries.max_tries", "queries.max_words", "queries.max_new_tokens", "drafts.per_query", "drafts.max_tries",
    "extend.attempts", "extend.micro_rounds", "extend.max_tries", "lora.r", "train.epochs", "train.batch_size",
    "train.grad_accum", "final.harvest_per_query", "eval.max_new_tokens", "agentwrite.sections",
    "agentwrite.min_sections", "agentwrite.max_sections", "agentwrite.plan_tries", "agentwrite.plan_max_new_tokens",
    "agentwrite.words_per_section", "agentwrite.min_section_words", "agentwrite.section_cap",
)
NON_NEGATIVE = (
    "queries.examples", "queries.min_words", "train.weight_decay", "final.min_words", "agentwrite.plan_temperature",
    "agentwrite.section_tries", "agentwrite.min_words",
)

# (setting, test, what it must be); a None value passes wherever None is allowed by the type.
RULES = tuple((k, lambda v: v >= 1, "at least 1") for k in AT_LEAST_ONE) + tuple(
    (k, lambda v: v >= 0, "0 or more") for k in NON_NEGATIVE) + (
    ("languages", lambda v: len(v) > 0 and set(v) <= set(LANGUAGES), f"a non-empty list of {list(LANGUAGES)}"),
    ("filters", lambda v: set(v) <= set(FILTERS), f"a list of {list(FILTERS)}"),
    ("seeds", lambda v: len(v) > 0, "at least one seed file"),
    ("sampling.temperature", lambda v: v >= 0, "0 (greedy) or more"),
    ("sampling.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("sampling.top_k", lambda v: v >= 0, "0 (off) or more"),
    ("sampling.repetition_penalty", lambda v: v > 0, "above 0 (1 is off)"),
    ("sampling.loop_tokens", lambda v: v >= 0, "0 (off) or more"),
    ("queries.judge_mode", lambda v: v in JUDGE_MODES, " or ".join(map(repr, JUDGE_MODES))),
    ("queries.near_duplicate", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("drafts.max_new_tokens", _positive, "null or at least 1"),
    ("extend.min_growth", lambda v: v >= 1, "at least 1 (an extension must be longer than its draft)"),
    ("extend.keep_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("extend.stage_cap", lambda v: v is None or v > 1, "null or above 1"),
    ("extend.stage2_min_growth", lambda v: v is None or v >= 1, "null or at least 1"),
    ("lora.alpha", lambda v: v > 0, "above 0"),
    ("lora.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("lora.top_layers", _positive, "null (all layers) or at least 1"),
    ("train.extender_epochs", lambda v: v is None or v >= 1, "null or at least 1"),
    ("train.lr", lambda v: v > 0, "above 0, e.g. 1e-4"),
    ("train.warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.batch_tokens", _positive, "null or at least 1"),
    ("train.max_seq_len", lambda v: v >= 8, "at least 8 tokens"),
    ("train.max_grad_norm", lambda v: v > 0, "above 0"),
    ("train.save_every", _positive, "null or at least 1"),
    ("train.line_keep_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.processes", lambda v: v >= 1, "at least 1"),
    ("eval.prompts", lambda v: v >= 0, "0 (all) or more"),
    ("agentwrite.prompts", lambda v: v >= 0, "0 (all) or more"),
    ("agentwrite.plan_style", lambda v: v in ("longwriter", "outline"), "'longwriter' or 'outline'"),
    ("agentwrite.context_words", _positive, "null (all of it) or at least 1"),
    ("agentwrite.train_epochs", _positive, "null or at least 1"),
    ("serve.backend", lambda v: v in ("hf", "openai"), "'hf' (in this process) or 'openai' (a server)"),
    ("serve.adapters", lambda v: v in ("load", "path", "manual"), "'load', 'path' or 'manual'"),
    ("serve.concurrency", lambda v: v >= 1, "at least 1"),
    ("serve.timeout", lambda v: v > 0, "above 0 seconds"),
    ("serve.retries", lambda v: v >= 0, "0 or more"),
    ("serve.context", _positive, "null or at least 1"),
)
# Pairs that must be ordered: (lower, upper).
ORDERED = (
    ("queries.min_words", "queries.max_words"),
    ("final.min_words", "final.max_words"),
    ("agentwrite.min_sections", "agentwrite.max_sections"),
    ("agentwrite.min_section_words", "agentwrite.max_section_words"),
)


def _get(config, key: str):
    for part in key.split("."):
        config = getattr(config, part)
    return config


ACCELERATE = ("ddp", "fsdp", "zero3")  # the accelerate configurations in data/accelerate/


def accelerate_file(value: str) -> Path:
    """The accelerate configuration file that `train.accelerate_config` names: one of ACCELERATE, or a path."""
    return DATA / "accelerate" / f"{value}.yaml" if value in ACCELERATE else Path(value).expanduser()


def check(config: Config) -> Config:
    """Refuse settings that cannot work, naming each with its value and what it must be."""
    problems = []
    for key, test, must in RULES:
        value = _get(config, key)
        if not test(value):
            problems.append(f"{key} = {value!r} must be {must}")
    for low, high in ORDERED:
        if _get(config, low) > _get(config, high):
            problems.append(f"{low} = {_get(config, low)!r} must not exceed {high} = {_get(config, high)!r}")
    if config.serve.backend == "openai" and not config.serve.base_url:
        problems.append("serve.backend = 'openai' needs serve.base_url, the server's address (e.g. --base-url "
                        "http://localhost:8000/v1)")
    accelerate_config = config.train.accelerate_config
    if accelerate_config and not accelerate_file(accelerate_config).is_file():
        problems.append(f"train.accelerate_config = {accelerate_config!r} is no file: give {', '.join(ACCELERATE)} "
                        "or the path of an accelerate configuration (one `accelerate config` wrote)")
    if problems:
        raise ConfigError("Settings that cannot work: " + "; ".join(problems) +
                          ". Change them with --set KEY=VALUE (or in config.yaml).")
    return config


def merge(config: Config, changes: dict) -> Config:
    """A copy of `config` with nested `changes` applied (dotted keys like 'train.lr' work too)."""
    data = config.to_dict()
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        if isinstance(value, dict) and isinstance(target.get(last), dict):
            target[last] = {**target[last], **value}
        else:
            target[last] = value
    return Config.from_dict(data)


# Each preset lists only what differs from the upstream defaults.
PRESETS: dict[str, dict] = {
    # Seconds: the test suite's whole-loop run on the embedded model.
    "smoke": {
        "iterations": 2, "languages": ["en"], "seeds": [str(DATA / "seed_en.jsonl")], "batch_size": 8,
        "chunk": 16, "quantization": None,
        # 96-token answers are cut short: keep them anyway so every step has data to work on.
        "filters": ["repetition", "meta"],
        "sampling": {"max_new_tokens": 96},
        "queries": {"per_iteration": 6, "max_tries": 5, "max_new_tokens": 64},
        # With a handful of texts, length-biased sampling would drop nearly all of them.
        "drafts": {"per_query": 1, "max_tries": 2, "length_biased": False},
        "extend": {"attempts": 1, "micro_rounds": 1, "max_tries": 1, "min_growth": 1.0, "length_biased": False,
                   "keep_trace": True},
        "lora": {"r": 4, "alpha": 8},
        "train": {"epochs": 2, "lr": 5e-4, "max_seq_len": 512, "save_every": 1},
        "final": {"harvest_per_query": 1, "min_words": 1, "max_words": 100000},
        "eval": {"prompts": 2, "max_new_tokens": 64},
        "agentwrite": {"prompts": 3, "plan_style": "outline", "sections": 3, "min_sections": 2, "max_sections": 3,
                       "plan_tries": 2, "plan_max_new_tokens": 48, "words_per_section": 40, "min_section_words": 20,
                       "max_section_words": 60, "context_words": 60, "section_tries": 1, "cut_repeats": True,
                       "train_epochs": 1},
    },
    # The README's main command: minutes on a 2-core CPU with the embedded model.
    "cpu-demo": {
        "iterations": 2, "languages": ["en"], "seeds": [str(DATA / "seed_en.jsonl")], "batch_size": 48,
        "chunk": 96, "quantization": None,
        # float32 weights, bfloat16 KV cache: reading the cache dominates a long decode step, and bf16 halves it
        "kv_cache_dtype": "bfloat16",
        "sampling": {"max_new_tokens": 1536},
        # The 135M judge is close to chance when sampled (it rambles); the forced choice never is unclear.
        "queries": {"per_iteration": 12, "max_tries": 4, "max_new_tokens": 96, "judge_mode": "choice"},
        # A retry round of a few drafts costs nearly as long as the first round: none here.
        "drafts": {"per_query": 2, "max_tries": 1},
        # With a handful of extensions, length-biased sampling would drop most of them.
        "extend": {"attempts": 2, "micro_rounds": 1, "max_tries": 1, "stage_cap": 2.0, "keep_trace": True,
                   "length_biased": False},
        # LoRA on the top 10 of 30 layers: training on the CPU runs faster (docs/performance.md).
        "lora": {"r": 32, "alpha": 64, "top_layers": 10},
        "train": {"epochs": 6, "extender_epochs": 2, "lr": 5e-4, "max_seq_len": 3072, "batch_size": 1,
                  "gradient_checkpointing": False},
        "final": {"harvest_per_query": 1, "min_words": 300, "max_words": 3000},
        "eval": {"prompts": 48, "max_new_tokens": 2048},
        # The 135M model ignores LongWriter's plan format but writes a numbered outline when pre-filled
        # with "1.", and writes a few hundred words without looping: five short sections, each shown
        # the end of the text so far, written again once when it repeats it, then cut before a repeat.
        # A Generator writes about as long as its data: only the texts of 900 words or more are kept.
        "agentwrite": {"prompts": 48, "plan_style": "outline", "sections": 5, "min_sections": 3, "max_sections": 5,
                       "plan_max_new_tokens": 160, "words_per_section": 220, "min_section_words": 150,
                       "max_section_words": 300, "section_cap": 1.4, "context_words": 250, "section_tries": 1,
                       "cut_repeats": True, "min_words": 900, "train_epochs": 10},
    },
    # A 7-8B model in 4-bit on a 16 GB T4 (fp16 compute), sized with `python -m sltk.memory colab-t4`;
    # the estimate step by step: docs/performance.md.
    "colab-t4": {
        "quantization": "nf4", "dtype": "float16", "batch_size": 3, "chunk": 64,
        "sampling": {"max_new_tokens": 1536},
        "queries": {"per_iteration": 200},
        "train": {"max_seq_len": 3072, "batch_size": 1, "gradient_checkpointing": True},
        "final": {"min_words": 1000, "max_words": 8000},
        # LongWriter's plan format (a 7-8B model follows it); the text so far shown is bounded so that a
        # section request stays near the draft's prompt size: about 3,000 words + the 1,000-word cap.
        "agentwrite": {"prompts": 200, "max_sections": 15, "context_words": 3000, "section_tries": 1,
                       "cut_repeats": True, "min_words": 1000, "train_epochs": 2},
    },
    # bf16 compute on an A100/H100 (40-80 GB): longer outputs, bigger batches.
    "a100": {
        "quantization": "nf4", "dtype": "bfloat16", "batch_size": 32, "chunk": 256,
        "sampling": {"max_new_tokens": 8192},
        "queries": {"per_iteration": 1000},
        "train": {"max_seq_len": 12288},
        "agentwrite": {"prompts": 1000, "section_tries": 1, "cut_repeats": True, "min_words": 2000},
    },
    # The upstream scale; meant for a served backend.
    "paper": {},
}


def preset(preset_name: str, **changes) -> Config:
    """The configuration of a named preset, with optional changes (dotted keys allowed).

    The run is named after the preset unless `name=` is among the changes.
    """
    if preset_name not in PRESETS:
        raise ConfigError(f"Unknown preset '{preset_name}'; choose one of {sorted(PRESETS)}.")
    config = merge(Config(name=preset_name), PRESETS[preset_name])
    return merge(config, changes) if changes else config

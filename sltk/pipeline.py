"""The Self-Lengthen loop over a run folder, as resumable steps.

    runs/<name>/config.yaml            the resolved configuration, written once
    runs/<name>/manifest.json          which steps are complete (rewritten atomically)
    runs/<name>/iter_<k>/queries.jsonl, drafts.jsonl, extended.jsonl,
                        sft_generator.jsonl, sft_extender.jsonl, adapters/<role>/, stats.json
    runs/<name>/final/dataset.jsonl    LongWriter-6k style `messages` records
    runs/<name>/eval/                  held-out lengths of the base model and each Generator

Every step appends records with stable ids and skips the ids already written, so a killed run
started again finishes with nothing lost or written twice. A step is complete when the
manifest says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import random
import time
from pathlib import Path

import torch

from . import launch, lengthen, records, sft
from .chat import ChatRequest, derive_seed, render_prompt
from .config import Config
from .models import ROLES, LoadedModel, add_roles, load_base, load_roles, lora_config, reset_role, save_roles
from .queries import Deduper, synthesize_round


def _rng(*parts) -> random.Random:
    return random.Random(derive_seed(*parts))


class Pipeline:
    """One run: its folder, configuration, manifest and (lazily) the model with both roles."""

    def __init__(self, config: Config, folder: str | Path, loaded: LoadedModel | None = None, progress: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "manifest.json"
        self.manifest = json.loads(manifest.read_text()) if manifest.exists() else {"steps": {}}
        saved = self.folder / "config.yaml"
        previous = _saved_config(saved)
        # A run folder that holds nothing but its settings (a start that failed) takes the new ones.
        started = any(p.name not in ("config.yaml", "config.yaml.tmp") for p in self.folder.iterdir())
        if previous is not None and _identity(previous) != _identity(config) and started:
            diff = sorted(k for k, v in _identity(config).items() if _identity(previous).get(k) != v)
            raise ValueError(
                f"{self.folder} was started with another configuration (differs in {diff}). "
                "Resume it with the same settings, or choose another run name."
            )
        if previous is None or previous.to_dict() != config.to_dict():
            config.save(saved)
        self.config = config
        for f in [*config.seeds, *config.held_out, *([config.agentwrite.queries] if config.agentwrite.queries else [])]:
            records.read_prompts(f)  # before any model loads: an empty or broken prompt file is named now
        self.progress = progress
        self._loaded = loaded
        self._backend = None
        self._adapters_of: int | None = None  # iteration whose adapters are loaded (0 = fresh)
        self._served_of: int | None = None  # served: iteration whose roles the server's names point at
        self._served_names: list[str] = []
        self._served_adapters = None

    # -- bookkeeping --------------------------------------------------------------------------
    def done(self, key: str) -> bool:
        return key in self.manifest["steps"]

    def mark(self, key: str, **info) -> None:
        self.manifest["steps"][key] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        records.write_json(self.folder / "manifest.json", self.manifest)

    def iteration_dir(self, k: int) -> Path:
        return self.folder / f"iter_{k}"

    # -- model --------------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            c = self.config
            self._loaded = load_base(c.model, quantization=c.quantization, dtype=c.dtype, device=c.device,
                                     trust_remote_code=c.trust_remote_code)
            self.check_prompt_lengths()
        return self._loaded

    def check_prompt_lengths(self) -> None:
        """Refuse, before any work, a seed, held-out or AgentWrite prompt that would leave its answer no
        room: one of more than half the model's context, counted with the model's own tokenizer."""
        c = self.config
        tok = self._loaded.tokenizer
        context = getattr(self._loaded.model.config, "max_position_embeddings", None) or 32768
        for f in [*c.seeds, *c.held_out, *([c.agentwrite.queries] if c.agentwrite.queries else [])]:
            for number, r in records.numbered_objects(f):
                prompt = render_prompt(tok, ChatRequest([{"role": "user", "content": r.get("query", "")}]))
                n = len(tok(prompt, add_special_tokens=False)["input_ids"])
                if n > context // 2:
                    raise ValueError(f"{f}:{number}: the query is {n} tokens long, more than half of the model's "
                                     f"context ({context}), so its answer would have no room. Shorten it or remove "
                                     "that line.")

    @property
    def served(self) -> bool:
        """Whether generation goes to a server (`serve.backend: openai`); training is never served."""
        return self.config.serve.backend == "openai"

    @property
    def backend(self):
        if self._backend is None:
            if self.served:
                from . import serving

                self._backend = serving.backend(self.config, self.progress)
                self._served_adapters = serving.ServedAdapters(self._backend, self.config, self.folder)
            else:
                from .backends import HFBackend

                self._backend = HFBackend(self.loaded, batch_size=self.config.batch_size,
                                          progress=self.progress, kv_dtype=self.config.kv_cache_dtype)
        return self._backend

    def use_roles(self, k: int) -> None:
        """Generate with the roles trained in iteration k (0: the base's weights): loaded here in process,
        made available to the server under names that carry the iteration when served."""
        if not self.served:
            return self.load_roles_of(k)
        if self._served_of == k:
            return
        backend = self.backend
        if k == 0:
            names = {}
            backend.roles.update({role: backend.model for role in ROLES})
        else:
            names = self._served_adapters.provide({f"{role}-iter{k}": self.iteration_dir(k) / "adapters" / role
                                                   for role in ROLES})
            backend.roles.update({role: names[f"{role}-iter{k}"] for role in ROLES})
        self._served_adapters.release(set(self._served_names) - set(names.values()))
        self._served_names, self._served_of = list(names.values()), k

    @contextlib.contextmanager
    def models(self, adapters: dict[str, str | Path | None]):
        """Named models to answer with: {name: adapter folder, None for the base, heldout.UNTRAINED for a fresh
        adapter}. Yields {name: the role to put in requests}; the adapters are let go afterwards."""
        from .heldout import UNTRAINED, adapters_loaded

        if not self.served:
            ks = [records.model_iteration(n) for n, f in adapters.items()
                  if isinstance(f, Path) and records.is_iteration_model(n)]
            self.load_roles_of(max(ks, default=0))  # a PEFT model to load the adapters into
            with adapters_loaded(self.loaded, adapters) as roles:
                yield roles
            return
        self.use_roles(0)
        wanted = {n: (self._untrained_adapter() if f == UNTRAINED else Path(f)) for n, f in adapters.items() if f}
        # an iteration's Generator goes under the name its iteration's steps used
        keys = {n: f"generator-iter{records.model_iteration(n)}" if records.is_iteration_model(n) else n
                for n in wanted}
        names = self._served_adapters.provide({keys[n]: f for n, f in wanted.items()})
        self.backend.roles.update({n: names[keys[n]] for n in wanted})
        try:
            yield {n: (n if f else None) for n, f in adapters.items()}
        finally:
            self._served_adapters.release(names.values())

    def _untrained_adapter(self) -> Path:
        """A fresh Generator adapter (the base's weights through the adapter path) saved for a server."""
        folder = self.folder / "served" / "untrained"
        if not (folder / "generator" / "adapter_config.json").exists():
            self.load_roles_of(0)
            save_roles(self.loaded, folder, roles=("generator",))
        return folder / "generator"

    def load_roles_of(self, k: int) -> None:
        """Make the loaded roles those trained in iteration k (0: fresh adapters)."""
        if self._adapters_of == k:
            return
        # Fresh LoRA weights are random: seed them, so a resumed run starts from the same ones.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.config.seed, "lora-init"))
            if not getattr(self.loaded.model, "peft_config", None):
                add_roles(self.loaded, lora_config(**vars(self.config.lora), model=self.loaded.model))
            elif k == 0:  # roles trained or loaded since: fresh weights again
                for role in ROLES:
                    reset_role(self.loaded, role)
        if k > 0:
            load_roles(self.loaded, self.iteration_dir(k) / "adapters", trainable=True)
        self._adapters_of = k

    @staticmethod
    def role_of(k: int, name: str) -> str | None:
        """The role (adapter) that plays `name` in iteration k: the plain base model (None) in iteration 1,
        later the previous iteration's adapter of that name."""
        return name if k > 1 else None

    # -- the loop -----------------------------------------------------------------------------
    def run(self):
        """All iterations, the final dataset, then the held-out growth table (returned)."""
        for k in range(1, self.config.iterations + 1):
            self.iteration(k)
        self.final_dataset()
        from . import heldout

        return heldout.evaluate(self)

    def iteration(self, k: int) -> dict:
        self.queries(k)
        self.drafts(k)
        self.extend(k)
        self.sft(k)
        for role in ROLES:
            self.train(k, role)
        return self.stats(k)

    def run_step(self, key: str, fn, outputs: tuple[Path, ...] = (), rewrites: bool = True):
        """Run `fn` as the step `key` unless the manifest has it done; record its seconds and info.

        `outputs` are the files the step writes (JSONL files, or adapter folders): the manifest keeps
        each one's record count, and a finished step whose file is now missing or short (a line
        removed or set aside by `sltk repair`, a file deleted) is not trusted but run again, which
        writes only the missing records. A step whose records are not made one by one (`rewrites=False`:
        the queries, which come in rounds) stops instead, saying how to go on.
        """
        before = {}
        if self.done(key):
            lost = self._lost_outputs(key)
            if not lost:
                return None
            if not rewrites:
                raise RuntimeError(
                    f"Step {key} was finished, but {'; '.join(lost)}, and its records are not made one by one, so "
                    "they cannot be written again. Restore the file, or remove the step's files and its entry in "
                    f"{self.folder / 'manifest.json'} to run it afresh (the steps after it then need the same).")
            records.log.warning("sltk: step %s was finished, but %s; running it again for what is missing.",
                                key, "; ".join(lost))
            before = self.manifest["steps"].pop(key).get("outputs") or {}
        start = time.perf_counter()
        info = fn() or {}
        written = {_relative(p, self.folder): _size(p) for p in outputs}
        short = [n for n, size in before.items() if size is not None and (written.get(n) or 0) < size]
        if short:
            raise RuntimeError(
                f"Step {key} could not write again what is missing from {short} (its records are not made "
                f"one by one). Restore the file, or remove the step's files and its entry in "
                f"{self.folder / 'manifest.json'} to run it afresh (later steps then need the same).")
        self.mark(key, seconds=round(time.perf_counter() - start, 1), **info, outputs=written)
        return info

    def _lost_outputs(self, key: str) -> list[str]:
        """What is missing from a finished step's outputs: one phrase per missing or short file."""
        lost = []
        for name, size in (self.manifest["steps"][key].get("outputs") or {}).items():
            now = _size(self.folder / name)
            if now is None:
                lost.append(f"{name} is gone")
            elif size is not None and now < size:
                lost.append(f"{name} has {now} of its {size} records")
        return lost

    # -- step 1: queries ----------------------------------------------------------------------
    def queries(self, k: int) -> None:
        self.run_step(f"iter_{k}/queries", lambda: self._queries(k), (self.iteration_dir(k) / "queries.jsonl",),
                      rewrites=False)

    def _queries(self, k: int) -> dict:
        """Rounds of self-instruct until each language has its share or the tries are used up.

        A round is one generation call per language; its accepted queries are appended in one
        write and carry the round number, so a resumed run knows which rounds are complete.
        """
        c, q = self.config, self.config.queries
        path, stats_path = self.iteration_dir(k) / "queries.jsonl", self.iteration_dir(k) / "queries.stats.json"
        have = records.read_jsonl(path, repair_tail=True) if path.exists() else []
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"by_round": []}
        seeds = [r for f in c.seeds for r in records.read_prompts(f)]
        dedup = Deduper(q.near_duplicate)
        for r in seeds + [r for f in c.held_out for r in records.read_prompts(f)] + self._all_queries(k) + have:
            dedup.add(r["query"])
        share = {lang: q.per_iteration // len(c.languages) + (i < q.per_iteration % len(c.languages))
                 for i, lang in enumerate(c.languages)}
        for round_ in range(q.max_tries):
            for lang in c.languages:
                count = sum(r["lang"] == lang for r in have)
                finished = any(r["round"] == round_ and r["lang"] == lang for r in stats["by_round"]) or any(
                    r.get("round", -1) >= round_ and r["lang"] == lang for r in have)
                if finished or count >= share[lang]:
                    continue
                pool = [s["query"] for s in seeds if s.get("lang", "en") == lang]
                if q.grow_seed_pool:
                    pool += [r["query"] for r in self._all_queries(k) + have if r["lang"] == lang]
                slot_seeds = [derive_seed(c.seed, k, "queries", lang, round_, j) for j in range(share[lang] - count)]
                log: list[dict] = []
                accepted, rs = synthesize_round(self.backend, pool, slot_seeds, lang, q, c.sampling, dedup, log)
                new = [{"id": f"i{k}-{lang}-q{count + j:05d}", "lang": lang, "query": text_, "round": round_}
                       for j, text_ in enumerate(accepted)]
                records.append_jsonl(path, new)
                have += new
                stats["by_round"].append({"round": round_, "lang": lang, **rs, "log": log})
                records.write_json(stats_path, stats)
        if not have:
            raise RuntimeError(
                f"Iteration {k}: no query was accepted in {q.max_tries} rounds (see {stats_path}). "
                "Raise queries.max_tries, or switch the judge off with queries.judge=false for a weak base model."
            )
        return {"records": len(have)}

    def _all_queries(self, k: int) -> list[dict]:
        """Queries of the iterations before k."""
        out = []
        for j in range(1, k):
            p = self.iteration_dir(j) / "queries.jsonl"
            if p.exists():
                out += records.read_jsonl(p)
        return out

    # -- step 2: drafts -----------------------------------------------------------------------
    def drafts(self, k: int) -> None:
        def run():
            qs = records.read_jsonl(self.iteration_dir(k) / "queries.jsonl")
            items = [{"id": f"{r['id']}-d{j}", "query_id": r["id"], "query": r["query"], "lang": r["lang"]}
                     for r in qs for j in range(self.config.drafts.per_query)]
            if k > 1:
                self.use_roles(k - 1)
            role = self.role_of(k, "generator")
            return self._retrying(items, self.iteration_dir(k) / "drafts.jsonl", self.config.drafts.max_tries,
                                  lambda chunk: lengthen.draft_round(self.backend, chunk, role, self.draft_sampling,
                                                                     self.config.filters))
        self.run_step(f"iter_{k}/drafts", run, (self.iteration_dir(k) / "drafts.jsonl",))

    @property
    def draft_sampling(self):
        """The sampling of drafts and of the final harvest: the run's, with the drafts' own cap if set."""
        cap = self.config.drafts.max_new_tokens
        return self.config.sampling.with_(max_new_tokens=cap) if cap else self.config.sampling

    def _retrying(self, items: list[dict], path: Path, max_tries: int, attempt) -> dict:
        """Run `attempt` on chunks of items until each passes or runs out of tries.

        Each try of each item has its own seed (from the run seed, the item id and the try
        number), so what an item gets does not depend on the chunk it landed in. A decided item
        (passed, or tries used up) goes to `path`; a failed try that will be retried goes to
        `<path>.tries.jsonl`, so a resumed run continues each item at the same try.
        """
        log = path.with_suffix(".tries.jsonl")
        done = {r["id"] for r in records.read_jsonl(path, repair_tail=True)} if path.exists() else set()
        records.append_jsonl(path, [])  # the file exists even when there is nothing to do
        past = records.read_jsonl(log, repair_tail=True) if log.exists() else []
        tries: dict[str, int] = {}
        rejected: dict[str, dict] = {}
        for r in past:
            tries[r["id"]] = tries.get(r["id"], 0) + 1
            for f in r["failed"]:
                rejected.setdefault(r["id"], {}).setdefault(f, 0)
                rejected[r["id"]][f] += 1
        pending = [it for it in items if it["id"] not in done]
        while pending:
            retry = []
            for chunk in records.chunks(pending, self.config.chunk):
                seeded = [{**it, "seed": derive_seed(self.config.seed, it["id"], tries.get(it["id"], 0))}
                          for it in chunk]
                decided, failed_tries = [], []
                for it, out in zip(seeded, attempt(seeded)):
                    tries[it["id"]] = tries.get(it["id"], 0) + 1
                    failed = out.get("failed") or ([] if out.get("ok", True) else ["growth"])
                    for f in failed:
                        rejected.setdefault(it["id"], {}).setdefault(f, 0)
                        rejected[it["id"]][f] += 1
                    if not failed or tries[it["id"]] >= max_tries:
                        decided.append({**it, **out, "ok": not failed, "tries": tries[it["id"]],
                                      "rejected": rejected.get(it["id"], {})})
                    else:
                        failed_tries.append({"id": it["id"], "try": tries[it["id"]], "failed": failed})
                        retry.append(it)
                records.append_jsonl(log, failed_tries)
                records.append_jsonl(path, decided)
            pending = [{k: v for k, v in it.items() if k != "seed"} for it in retry]
        return {"records": len(items)}

    # -- step 3 and 4: selection and extension ------------------------------------------------
    def kept_drafts(self, k: int) -> tuple[list[dict], list[dict]]:
        """Iteration k's drafts that passed the filters, and those length-biased sampling keeps of them."""
        drafts = [r for r in records.read_jsonl(self.iteration_dir(k) / "drafts.jsonl") if r["ok"]]
        kept = (lengthen.select_by_length(drafts, _rng(self.config.seed, k, "select-drafts"))
                if self.config.drafts.length_biased else drafts)
        return drafts, kept

    def extend(self, k: int) -> None:
        def run():
            drafts, kept = self.kept_drafts(k)
            e = self.config.extend
            items = [{"id": f"{d['id']}-e{a}", "draft_id": d["id"], "query_id": d["query_id"], "query": d["query"],
                      "lang": d["lang"], "draft": d["text"]} for d in kept for a in range(e.attempts)]
            if k > 1:
                self.use_roles(k - 1)

            def attempt(chunk):
                return lengthen.extension_round(self.backend, [{**it, "text": it["draft"]} for it in chunk],
                                                self.role_of(k, "extender"), e, self.config.sampling,
                                                self.config.filters, trace=e.keep_trace)
            info = self._retrying(items, self.iteration_dir(k) / "extended.jsonl", e.max_tries, attempt)
            return {**info, "drafts_ok": len(drafts), "drafts_kept": len(kept)}
        self.run_step(f"iter_{k}/extended", run, (self.iteration_dir(k) / "extended.jsonl",))

    def extension_example(self, k: int) -> dict | None:
        """One extension attempt of iteration k with each stage's text, best first.

        Read from the run when it kept traces (`extend.keep_trace`); otherwise the first draft is
        extended once more with the trace on (nothing is written to the run).
        """
        path = self.iteration_dir(k) / "extended.jsonl"
        ext = records.read_jsonl(path) if path.exists() else []
        traced = [r for r in ext if r["rounds"] and "stage1" in r["rounds"][0]]
        if traced:
            return max(traced, key=lambda r: (r["ok"], r["growth"]))
        if not ext:
            return None
        self.use_roles(k - 1)
        item = {**ext[0], "text": ext[0]["draft"], "seed": derive_seed(self.config.seed, "walkthrough", k)}
        shown = lengthen.extension_round(self.backend, [item], self.role_of(k, "extender"), self.config.extend,
                                         self.config.sampling, self.config.filters, trace=True)[0]
        return {**shown, "draft": ext[0]["draft"]}

    # -- step 5: SFT records ------------------------------------------------------------------
    def sft(self, k: int) -> None:
        def run():
            ext = [r for r in records.read_jsonl(self.iteration_dir(k) / "extended.jsonl") if r["ok"]]
            kept = (lengthen.select_by_length(ext, _rng(self.config.seed, k, "select-extended"))
                    if self.config.extend.length_biased else ext)
            rng = _rng(self.config.seed, k, "line-removal")
            gen = [sft.generator_record(r["query"], r["text"], id=r["id"]) for r in kept]
            extd = [sft.extender_record(r["query"], r["draft"], r["text"], r["lang"], rng,
                                        keep_prob=self.config.train.line_keep_prob, id=r["id"]) for r in kept]
            records.write_jsonl(self.iteration_dir(k) / "sft_generator.jsonl", gen)
            records.write_jsonl(self.iteration_dir(k) / "sft_extender.jsonl", extd)
            return {"extended_ok": len(ext), "records": len(kept)}
        self.run_step(f"iter_{k}/sft", run, tuple(self.iteration_dir(k) / f"sft_{r}.jsonl" for r in ROLES))

    # -- step 6: training ---------------------------------------------------------------------
    def train(self, k: int, role: str) -> None:
        def run():
            from .train import train_role

            data = records.read_jsonl(self.iteration_dir(k) / f"sft_{role}.jsonl")
            if not data:  # nothing survived this iteration: the role goes on unchanged
                self.load_roles_of(k - 1)
                save_roles(self.loaded, self.iteration_dir(k) / "adapters", roles=(role,))
                return {"records": 0, "skipped": "no training data"}
            t = self.config.train
            epochs = t.extender_epochs if role == "extender" and t.extender_epochs is not None else t.epochs
            cfg = self.train_config(epochs, self.config.seed + k)
            out = self.iteration_dir(k) / "adapters" / role
            if launch.wanted(t):
                result = self.launched(role, k - 1, self.iteration_dir(k) / f"sft_{role}.jsonl", out, cfg)
            else:
                self.load_roles_of(k - 1)
                result = train_role(self.loaded, role, data, out, cfg, resume=True, progress=self.progress)
            return {"records": len(data), "final_loss": result.get("final_loss")}
        self.run_step(f"iter_{k}/train_{role}", run, (self.iteration_dir(k) / "adapters" / role,))
        if all(self.done(f"iter_{k}/train_{r}") for r in ROLES):
            self._adapters_of = self._served_of = None  # the next use loads both roles from iteration k's folder

    def launched(self, role: str, start: int, data: Path, out: Path, cfg) -> dict:
        """Train `role` from iteration `start`'s roles in launched processes (`sltk.launch`); this
        process's model is let go first, so that the launched ones have the memory."""
        self.release_model()
        return launch.train(self.folder, role, start, data, out, cfg)

    def release_model(self) -> None:
        """Let go of the in-process model (it loads again when next needed)."""
        if self._loaded is None:
            return
        self._loaded = self._adapters_of = None
        if not self.served:
            self._backend = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def train_config(self, epochs: int, seed: int):
        """The run's `train` section with this training's epochs and seed."""
        return dataclasses.replace(self.config.train, epochs=epochs, seed=seed)

    # -- statistics ---------------------------------------------------------------------------
    def stats(self, k: int) -> dict:
        from .analysis import iteration_stats

        result = iteration_stats(self.folder, k)
        records.write_json(self.iteration_dir(k) / "stats.json", result)
        return result

    # -- after the last iteration -------------------------------------------------------------
    def final_dataset(self) -> Path:
        K, c = self.config.iterations, self.config
        out = self.folder / "final"

        def harvest():
            self.use_roles(K)
            qs = records.read_jsonl(self.iteration_dir(K) / "queries.jsonl")
            items = [{"id": f"{r['id']}-h{j}", "query_id": r["id"], "query": r["query"], "lang": r["lang"]}
                     for r in qs for j in range(c.final.harvest_per_query)]
            return self._retrying(items, out / "harvest.jsonl", c.drafts.max_tries,
                                  lambda chunk: lengthen.draft_round(self.backend, chunk, "generator",
                                                                     self.draft_sampling, c.filters, desc="harvest"))

        def dataset():
            pool = []
            for j in range(1, K + 1):
                for name in ("drafts.jsonl", "extended.jsonl"):
                    pool += records.read_jsonl(self.iteration_dir(j) / name)
            pool += records.read_jsonl(out / "harvest.jsonl")
            pool = sorted((r for r in pool if r["ok"]), key=lambda r: r["id"])  # not the order they were written in
            dataset_records = sft.final_records(pool, c.final.min_words, c.final.max_words, _rng(c.seed, "final"))
            records.write_jsonl(out / "dataset.jsonl", dataset_records)
            sft.save_hf_dataset(dataset_records, out / "hf_dataset")
            return {"pool": len(pool), "records": len(dataset_records)}

        self.run_step("final/harvest", harvest, (out / "harvest.jsonl",))
        self.run_step("final/dataset", dataset, (out / "dataset.jsonl",))
        return out / "dataset.jsonl"


    # -- AgentWrite ----------------------------------------------------------------------------
    @property
    def agentwrite_adapter(self) -> Path:
        """Where the Generator trained on the run's AgentWrite data is saved."""
        return self.folder / "agentwrite" / "adapters" / "generator"

    def agentwrite_prompts(self) -> list[dict]:
        """AgentWrite's prompts: `agentwrite.queries` if set, else the queries of every iteration the run
        has finished them for (the queries Self-Lengthen made its data from), else the seed files; the
        first `agentwrite.prompts`."""
        aw, c = self.config.agentwrite, self.config
        made = [self.iteration_dir(k) / "queries.jsonl" for k in range(1, c.iterations + 1)
                if self.done(f"iter_{k}/queries") and (self.iteration_dir(k) / "queries.jsonl").exists()]
        files = [Path(aw.queries)] if aw.queries else made or [Path(f) for f in c.seeds]
        rows = [r for f in files for r in records.read_prompts(f)]
        for r in rows:
            if "id" not in r:
                raise ValueError(f"AgentWrite prompts {files}: every record needs an 'id'; "
                                 f"{r['query'][:60]!r} has none.")
        rows = [{"id": r["id"], "query": r["query"], "lang": r.get("lang", "en")} for r in rows
                if r.get("lang", "en") in c.languages]
        return rows[: aw.prompts] if aw.prompts else rows

    def agentwrite(self) -> dict:
        """AgentWrite data from the base model into `<run>/agentwrite/`; its statistics."""
        from .agentwrite import AgentWrite

        folder = self.folder / "agentwrite"
        c = self.config

        def run():
            self.use_roles(0)
            writer = AgentWrite(self.backend, folder, c.agentwrite, c.sampling, seed=c.seed, chunk=c.chunk,
                                filters=c.filters, progress=self.progress)
            stats = writer.run(self.agentwrite_prompts())
            return {"records": stats["ok"], "prompts": stats["prompts"]}

        written = ("plans", "sections", "texts", "dataset")
        self.run_step("agentwrite/data", run, tuple(folder / f"{n}.jsonl" for n in written))
        return json.loads((folder / "stats.json").read_text())

    def train_generator(self, data: list[dict], out: Path, key: str, epochs: int | None = None) -> dict:
        """A fresh Generator adapter trained on `data` (messages records), saved at `out`."""
        from .train import train_role

        def run():
            cfg = self.train_config(epochs or self.config.train.epochs, self.config.seed)
            if launch.wanted(self.config.train):
                path = Path(out).parent / f".{Path(out).name}.records.jsonl"
                records.write_jsonl(path, data)
                result = self.launched("generator", 0, path, Path(out), cfg)
                path.unlink(missing_ok=True)
            else:
                self._adapters_of = None
                self.load_roles_of(0)  # fresh weights, the same however the roles got here
                result = train_role(self.loaded, "generator", data, out, cfg, resume=True, progress=self.progress)
                self._adapters_of = None  # the trained weights are not iteration 0's roles
            return {"records": len(data), "final_loss": result.get("final_loss"), "steps": result.get("steps"),
                    "tokens_per_second": round(result["tokens"] / max(result["seconds"], 1e-9), 1)}

        return self.run_step(key, run, (Path(out),)) or self.manifest["steps"][key]

    # -- preference pairs --------------------------------------------------------------------
    def preference_pairs(self, adapter: str | Path, k: int = 4, lengths: tuple[int, ...] = (),
                         judge: bool = False, prompts: list[dict] | None = None) -> dict:
        """DPO pairs from a trained Generator's k answers per prompt, into `<run>/dpo/` (resumable).

        Prompts: AgentWrite's unless given; each needs a required length (its own `length`, else one of
        `lengths`). Quality: the run's base model as a forced-choice judge with `judge`, else the proxy.
        """
        from . import judge as judging
        from . import preference, scoring

        c, folder = self.config, self.folder / "dpo"
        items = preference.with_length(prompts if prompts is not None else self.agentwrite_prompts(), list(lengths))
        sampling = c.sampling.with_(max_new_tokens=c.eval.max_new_tokens)
        with self.models({"dpo_policy": Path(adapter)}) as roles:
            samples = preference.sample(self.backend, items, roles["dpo_policy"], k, sampling, c.seed,
                                        folder / "samples.jsonl")
        quality = None
        if judge:
            path = folder / "judge_choice.jsonl"
            if not path.exists():
                flat = [{"id": s["id"], "query": it["query"], "text": s["text"]} for it in items
                        for s in samples[it["id"]]]
                records.write_jsonl(path, judging.judge_choice(self.backend, flat, "longbench_write").rows)
            quality = {r["id"]: scoring.lbw_quality([r["scores"]])["S_q"] for r in records.read_jsonl(path)}
        pairs, stats = preference.pairs(items, samples, _rng(c.seed, "dpo"), quality)
        records.write_jsonl(folder / "pairs.jsonl", pairs)
        records.write_json(folder / "stats.json", {**stats, "k": k, "adapter": str(adapter)})
        return stats


def _relative(path: Path, folder: Path) -> str:
    path = Path(path)
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path.resolve())


def _size(path: Path) -> int | None:
    """A step output's size: a JSONL file's complete records, 0 for an adapter folder that has its
    weights, None for something missing."""
    if path.suffix == ".jsonl":
        return records.count(path) if path.is_file() else None
    return 0 if any(path.rglob("*.safetensors")) else None


def _saved_config(path: Path) -> Config | None:
    """The configuration a run folder was started with; None when there is none, or an unreadable one
    (an empty file from a start that failed)."""
    if not path.exists() or not path.read_text().strip():
        return None
    return Config.load(path)


# Settings that say only where a run computes, not what it makes: a run can change them and resume.
WHERE = ("serve.", "train.processes", "train.accelerate_config")


def _identity(config: Config) -> dict:
    """The settings that make a run what it is, flat: all but those of WHERE."""
    return {k: v for k, v in _flat(config.to_dict()).items() if not k.startswith(WHERE)}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out

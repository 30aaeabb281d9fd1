"""LongWriter's AgentWrite: plan the piece, then write it section by section (METHOD 2.1).

One call plans each prompt (one line per section); then section k of every prompt is written
in one batch, each call seeing the instruction, the plan, the text so far (its front left out
when it would not fit) and its own step. The sections are joined, stray "Paragraph k" labels
removed, and the text checked by the run's filters. With `parallel`, every section is written
from the plan alone, all at once.

On disk, under one folder:

    plans.jsonl      one record per prompt: the plan as written and its parsed steps
    sections.jsonl   one record per (prompt, step), appended chunk by chunk
    texts.jsonl      the assembled texts with their filter outcome
    dataset.jsonl    the texts that pass, as `messages` records for `sltk train --data`
    stats.json       counts, lengths, pass rates and generation speed

A killed run started again repeats no finished call: plans and sections are read back by id.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import prompts, records, text
from .chat import ChatRequest, Sampling, derive_seed
from .config import AgentWriteConfig
from .lengthen import TOKENS_PER_WORD, outcome

PROMPT_OVERHEAD_TOKENS = 64  # chat template and wording around the parts of a section request


@dataclass
class Step:
    """One line of a plan: what the section is about and how many words it should have."""

    point: str
    words: int | None = None


# -- the plan ---------------------------------------------------------------------------------

_ITEM = re.compile(
    r"""^\s*(?:[#>*_\s]*)                       # markdown: headings, bold, quotes
        (?:
            (?:paragraph|section|part|step|point|chapter)\s*(?P<n1>\d+)   # "Paragraph 3", "Section 3"
          | 第\s*(?P<n2>\d+)\s*(?:段|部分|节|章)                         # "第3段"
          | \(?(?P<n3>\d+)[.)、:：]                                     # "3." "3)" "(3)" "3、"
          | (?P<bullet>[-–—•*+])(?=\s)                                    # "- item"
        )
        [*_]*\s*[-–—:：.)]?\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_WORDS = re.compile(
    r"""(?:word\s*count|length|字数)\s*[:：]?\s*(?:about|around|approximately|roughly|约|~)?\s*(?P<a>\d[\d,]*)
        (?:\s*(?:-|–|to)\s*\d[\d,]*)?\s*(?:words|字)?
      | (?:about|around|approximately|roughly|约|~)?\s*(?P<b>\d[\d,]*)(?:\s*(?:-|–|to)\s*\d[\d,]*)?\s*(?:words|字)""",
    re.IGNORECASE | re.VERBOSE,
)
_LABEL = re.compile(r"(?:main\s*point|要点)\s*[:：]\s*", re.IGNORECASE)
_TRAILING = re.compile(r"(?:[\s\-–—:：,;]|\(\s*\)|\[\s*\]|word\s*count|字数)*$", re.IGNORECASE)


def parse_plan(plan: str, default_words: int = 300, min_words: int = 200, max_words: int = 1000) -> list[Step]:
    """The steps of a plan as models actually write it.

    Understands LongWriter's lines (``Paragraph 1 - Main Point: ... - Word Count: 400 words``) and
    what models write instead: other numbering (``1.``, ``1)``, ``(1)``, ``Section 1:``, ``第1段``),
    dash or star bullets, markdown emphasis, a missing word count (``default_words``), lead-in or
    closing prose (dropped when the plan has numbered lines), indented sub-points (joined to their
    section) and the same heading twice (kept once). Word counts are clamped to
    [``min_words``, ``max_words``].
    """
    lines = [line.rstrip() for line in plan.splitlines() if line.strip()]
    marked = [bool(_ITEM.match(line)) and bool(_ITEM.sub("", line, count=1).strip()) for line in lines]
    steps: list[Step] = []
    for line, is_item in zip(lines, marked):
        indented = line[: len(line) - len(line.lstrip())] != ""
        if any(marked) and (not is_item or (indented and steps and _is_sub_bullet(line))):
            if steps and (indented or not is_item) and not _is_prose(line):
                steps[-1].point = f"{steps[-1].point}; {_clean_point(_ITEM.sub('', line, count=1))}".strip("; ")
            continue
        body = _ITEM.sub("", line, count=1) if is_item else line
        words = _word_count(body)
        point = _clean_point(_WORDS.sub("", body))
        if not point:
            continue
        steps.append(Step(point, words))
    unique: list[Step] = []
    seen: set[str] = set()
    for step in steps:
        key = re.sub(r"\W+", " ", step.point.lower()).strip()
        if key and key not in seen:
            seen.add(key)
            unique.append(step)
    for step in unique:
        step.words = min(max(step.words or default_words, min_words), max_words)
    return unique


def _is_sub_bullet(line: str) -> bool:
    return bool(re.match(r"^\s+(?:[-–—•*+]|[a-z][.)]|[ivx]+[.)])\s", line, re.IGNORECASE))


def _is_prose(line: str) -> bool:
    """A closing remark after a list ("I hope this outline helps!"), not part of a section."""
    return bool(re.match(r"^\s*(?:i hope|this (?:outline|plan)|let me know|note:|these sections)", line, re.IGNORECASE))


def _word_count(body: str) -> int | None:
    m = _WORDS.search(body)
    if not m:
        return None
    value = int((m.group("a") or m.group("b")).replace(",", ""))
    return value or None


def _clean_point(point: str) -> str:
    point = _LABEL.sub("", point)
    point = re.sub(r"\*\*|__", "", point).strip()
    point = _TRAILING.sub("", point).strip(" -–—:：")
    return point


def render_plan(steps: list[Step], lang: str = "en") -> str:
    """The parsed plan as the section requests show it: one numbered line per step."""
    unit = "words" if lang == "en" else "字"
    return "\n".join(f"{i}. {s.point} (about {s.words} {unit})" for i, s in enumerate(steps, 1))


# -- the sections -----------------------------------------------------------------------------

_SECTION_LABEL = re.compile(
    r"^\s*[#*_\s]*(?:paragraph|section|part|step)\s*\d+(?:\s*of\s*\d+)?[*_]*\s*[:.\-–—]?\s*[*_]*\s*"
    r"|^\s*[#*_\s]*第\s*\d+\s*(?:段|部分|节)[*_]*\s*[:：]?\s*",
    re.IGNORECASE,
)


def strip_labels(section: str) -> str:
    """A section without a leading "Paragraph 3:" / "Section 3 -" label (a subtitle after it stays), and
    without a first paragraph that echoes the request's instruction."""
    lines = section.strip().splitlines()
    while lines:
        rest = _SECTION_LABEL.sub("", lines[0], count=1)
        if rest == lines[0]:
            break
        if rest.strip(" *_#"):
            lines[0] = rest
            break
        lines.pop(0)
    first, sep, rest = "\n".join(lines).strip().partition("\n\n")
    return rest.strip() if sep and prompts.SECTION_ECHO.search(first) else (first + sep + rest).strip()


# A short paragraph inside a section that talks to the user instead of writing the text: it announces what
# follows ("Here is the rewritten paragraph:"), names the text's parts or versions (the meta filter's words
# and the task's: "This concludes the section.", "my next draft", "the rest of the instructions"), or
# addresses the reader as a chat assistant ("Please share it now!", "I'm ready to help"). `drop_talk`
# drops such paragraphs wherever they stand in a section (dialogue, which opens with a quotation mark, stays).
_TASK_WORDS_EN = ("section", "sections", "draft", "drafts", "rewritten", "continuation", "instructions")
TALK = re.compile(
    r"^\s*(?:here(?:'s|’s| is| are)|below (?:is|are))\b.*[:：]\s*$"
    r"|\b(?:" + "|".join(text.META_WORDS_EN + _TASK_WORDS_EN) + r")\b"
    r"|\byour (?:essay|text|story|article|letter|piece|part)\b|\bour conversation\b"
    r"|\bplease\b|\blet me know\b|\bfeel free\b|\bi(?:'m|’m| am) (?:ready|happy|glad|here) to (?:help|assist)\b"
    r"|本部分|这一部分|下一部分|段落|草稿|改写|版本|指令|请(?:提供|分享|继续|告诉)",
    re.IGNORECASE | re.MULTILINE)
TALK_WORDS = 60  # a paragraph longer than this is the text itself, whatever words it contains


def is_talk(paragraph: str) -> bool:
    """A short paragraph that talks to the user instead of writing the text (`TALK`)."""
    paragraph = paragraph.strip()
    return (bool(paragraph) and not paragraph.startswith(('"', "“", "'", "‘", "「", "『"))
            and text.count_words(paragraph) <= TALK_WORDS and bool(TALK.search(paragraph)))


def drop_talk(section: str) -> str:
    """The section without its paragraphs that talk to the user (see `is_talk`)."""
    paragraphs = re.split(r"\n[ \t]*\n", section.strip())
    kept = [p.strip() for p in paragraphs if p.strip() and not is_talk(p)]
    return section.strip() if len(kept) == len(paragraphs) else "\n\n".join(kept)


def trim_to_sentence(section: str, lang: str = "en") -> str:
    """A section cut off by its token cap, back to the last sentence that ends properly."""
    if text.ends_properly(section, lang):
        return section
    marks = [m.end() for m in re.finditer(r"[.!?。！？…][\"'”’)\]」』》】）〉]*", section)]
    return section[: marks[-1]].rstrip() if marks else ""


def heading(point: str, max_words: int = 12) -> str | None:
    """A section title from its plan line: the part before a colon, or the whole line when short."""
    head = re.split(r"\s*[:：]\s*|\s+[-–—]\s+", point, maxsplit=1)[0].strip(" .*_#\"'")
    return head if head and len(head.split()) <= max_words else None


def headings(points: list[str]) -> list[str] | None:
    """Every section's heading, or None when some plan line is a sentence rather than a title
    (a text has headings throughout or not at all)."""
    heads = [heading(p) for p in points]
    return None if None in heads else heads


def assemble(sections: list[str], headings: list[str | None] | None = None) -> str:
    """The sections joined with blank lines, labels removed; each under its markdown heading if given."""
    heads = headings or [None] * len(sections)
    parts = [(h, s) for h, s in zip(heads, (strip_labels(x) for x in sections)) if s]
    return "\n\n".join(f"## {h}\n\n{s}" if h else s for h, s in parts)


def repeats(so_far: str, section: str, lang: str = "en") -> bool:
    """True when the section repeats an n-gram (the repetition filter's) of itself or of the text so far."""
    return bool(section.strip()) and text.has_repeated_ngram(assemble([so_far, section]), lang)


def clean_part(so_far: str, section: str, lang: str = "en") -> str:
    """The section's leading paragraphs that bring in no repeated n-gram, ending on a whole sentence."""
    kept: list[str] = []
    for unit in text.split_units(section):
        if text.has_repeated_ngram(assemble([so_far, *kept, unit]), lang):
            break
        kept.append(unit)
    while kept and not text.ends_properly(kept[-1], lang):
        kept.pop()
    return "\n\n".join(kept)


def shown_text(so_far: str, max_words: int | None, lang: str = "en") -> str:
    """The text so far as a request shows it: whole, or its last paragraphs within `max_words`, marked."""
    if max_words is None or text.count_words(so_far) <= max_words:
        return so_far
    kept: list[str] = []
    for unit in reversed(text.split_units(so_far)):
        if text.count_words("\n\n".join([unit, *kept])) > max_words:
            if not kept:  # one paragraph longer than the budget: its last words
                kept = [" ".join(unit.split()[-max_words:])]
            break
        kept.insert(0, unit)
    return "\n\n".join([prompts.OMITTED[lang], *kept])


def section_cap(words: int, cfg: AgentWriteConfig) -> int:
    return math.ceil(words * TOKENS_PER_WORD * cfg.section_cap)


# -- the run ----------------------------------------------------------------------------------


class AgentWrite:
    """AgentWrite over one folder for a list of prompts ({"id", "query", "lang"}).

    `backend` is any sltk backend (in-process or served); `role` the adapter that writes (None: the
    base model); `context` the model's context in tokens, which bounds the text so far shown.
    """

    def __init__(self, backend, folder: str | Path, cfg: AgentWriteConfig, sampling: Sampling, seed: int = 0,
                 chunk: int = 128, filters=text.FILTERS, role: str | None = None, context: int | None = None,
                 progress: bool = True):
        self.backend, self.folder, self.cfg, self.sampling = backend, Path(folder), cfg, sampling
        self.seed, self.chunk, self.filters, self.role, self.progress = seed, chunk, tuple(filters), role, progress
        self.context = context or getattr(backend, "context", None) or 32768
        self.folder.mkdir(parents=True, exist_ok=True)
        self.generated = {"tokens": 0, "seconds": 0.0, "calls": 0}

    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, desc: str):
        start = time.perf_counter()
        outs = self.backend.generate(reqs, sampling, desc=desc)
        self.generated["seconds"] += time.perf_counter() - start
        self.generated["tokens"] += sum(o.tokens for o in outs)
        self.generated["calls"] += len(reqs)
        return outs

    def run(self, items: list[dict]) -> dict:
        """Plans, sections, assembly and the dataset; returns the statistics (also in stats.json)."""
        ids = [it["id"] for it in items]
        if len(set(ids)) != len(ids):
            raise ValueError("AgentWrite prompts need unique ids; "
                             f"repeated: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
        plans = self.plans(items)
        sections = self.sections(items, plans)
        return self.assemble(items, plans, sections)

    # -- plans ------------------------------------------------------------------------------
    def plans(self, items: list[dict]) -> dict[str, dict]:
        cfg, path = self.cfg, self.folder / "plans.jsonl"
        done = {r["id"]: r for r in records.read_jsonl(path, repair_tail=True)} if path.exists() else {}
        records.append_jsonl(path, [])
        pending = [it for it in items if it["id"] not in done]
        sampling = self.sampling.with_(temperature=cfg.plan_temperature, max_new_tokens=cfg.plan_max_new_tokens)
        tries: dict[str, int] = {}
        while pending:
            retry = []
            for chunk in records.chunks(pending, self.chunk):
                reqs = []
                for it in chunk:
                    messages, prefill = prompts.plan_messages(it["query"], it.get("lang", "en"), cfg.plan_style,
                                                              cfg.sections)
                    reqs.append(ChatRequest(messages, prefill=prefill, role=self.role, id=it["id"],
                                            seed=derive_seed(self.seed, "agentwrite-plan", it["id"],
                                                             tries.get(it["id"], 0))))
                outs = self._generate(reqs, sampling, "plans")
                new = []
                for it, req, out in zip(chunk, reqs, outs):
                    tries[it["id"]] = tries.get(it["id"], 0) + 1
                    raw = req.prefill + out.text
                    steps = parse_plan(raw, cfg.words_per_section, cfg.min_section_words, cfg.max_section_words)
                    if out.finish_reason != "stop" and len(steps) > cfg.max_sections:
                        pass  # the cut-off last line is beyond the sections kept anyway
                    elif out.finish_reason != "stop" and steps:
                        steps = steps[:-1]  # the plan ran into its cap: its last line is cut off
                    ok = len(steps) >= cfg.min_sections
                    if not ok and tries[it["id"]] < cfg.plan_tries:
                        retry.append(it)
                        continue
                    new.append({"id": it["id"], "plan": raw, "steps": [asdict(s) for s in steps[: cfg.max_sections]],
                                "parsed": len(steps), "tries": tries[it["id"]], "ok": ok})
                records.append_jsonl(path, new)
                done.update({r["id"]: r for r in new})
            pending = retry
        return done

    # -- sections ---------------------------------------------------------------------------
    def sections(self, items: list[dict], plans: dict[str, dict]) -> dict[str, list[dict]]:
        """Each prompt's written sections in order; step k of every prompt is written in one batch."""
        path = self.folder / "sections.jsonl"
        by_prompt: dict[str, list[dict]] = {it["id"]: [] for it in items}
        if path.exists():
            for r in sorted(records.read_jsonl(path, repair_tail=True), key=lambda r: (r["query_id"], r["step"])):
                if r["query_id"] in by_prompt:
                    by_prompt[r["query_id"]].append(r)
        records.append_jsonl(path, [])
        live = [it for it in items if plans[it["id"]]["ok"]]
        steps = max((len(plans[it["id"]]["steps"]) for it in live), default=0)
        rounds = [None] if self.cfg.parallel else range(1, steps + 1)
        for k in rounds:
            jobs = []
            for it in live:
                have, n = by_prompt[it["id"]], len(plans[it["id"]]["steps"])
                if any(r["empty"] for r in have):
                    continue  # an empty reply drops the sample (upstream)
                wanted = range(1, n + 1) if k is None else ([k] if k <= n else [])
                written = {r["step"] for r in have}
                jobs += [(it, j) for j in wanted if j not in written]
            desc = "sections" if k is None else f"section {k}/{steps}"
            for chunk in records.chunks(jobs, self.chunk):
                new = self._write(chunk, plans, by_prompt, desc)
                records.append_jsonl(path, new)
                for r in new:
                    by_prompt[r["query_id"]].append(r)
                    by_prompt[r["query_id"]].sort(key=lambda r: r["step"])
        return by_prompt

    def _request(self, it: dict, plan: dict, k: int, so_far: str | None, tries: int) -> ChatRequest:
        cfg, lang = self.cfg, it.get("lang", "en")
        steps = [Step(**s) for s in plan["steps"]]
        step = steps[k - 1]
        plan_text = render_plan(steps, lang)
        cap = section_cap(step.words, cfg)
        shown = None
        if so_far is not None:
            # what fits of the text so far: the context, less the rest of the prompt and the section's cap
            fixed = text.count_words(it["query"]) + text.count_words(plan_text) + 60
            room = int((self.context - cap - PROMPT_OVERHEAD_TOKENS) / TOKENS_PER_WORD) - fixed
            budget = max(0, room if cfg.context_words is None else min(room, cfg.context_words))
            shown = shown_text(so_far, budget, lang)
        messages = prompts.section_messages(it["query"], plan_text, k, len(steps), step.point, step.words, shown, lang)
        return ChatRequest(messages, role=self.role, id=f"{it['id']}-s{k:02d}", max_new_tokens=cap,
                           seed=derive_seed(self.seed, "agentwrite-section", it["id"], k, tries))

    def _write(self, jobs: list[tuple[dict, int]], plans: dict, by_prompt: dict, desc: str) -> list[dict]:
        """Write one chunk of (prompt, step) jobs, again while a section repeats or comes back empty
        (up to section_tries)."""
        cfg = self.cfg
        # the sections before each job's step (a section written again later sees only what came before it)
        so_far = [None if cfg.parallel else assemble([r["text"] for r in by_prompt[it["id"]] if r["step"] < k])
                  for it, k in jobs]
        results: dict[int, dict] = {}
        pending = list(range(len(jobs)))
        for attempt in range(cfg.section_tries + 1):
            if not pending:
                break
            reqs = [self._request(jobs[i][0], plans[jobs[i][0]["id"]], jobs[i][1], so_far[i], attempt)
                    for i in pending]
            outs = self._generate(reqs, self.sampling, desc if not attempt else f"{desc} again")
            again = []
            for i, out in zip(pending, outs):
                it, k = jobs[i]
                lang = it.get("lang", "en")
                labelled = strip_labels(out.text)
                whole = trim_to_sentence(labelled, lang) if out.finish_reason != "stop" else labelled
                body = drop_talk(whole)
                repeated = repeats(so_far[i] or "", body, lang)
                results[i] = {"id": f"{it['id']}-s{k:02d}", "query_id": it["id"], "step": k, "text": body,
                              "raw_words": text.count_words(out.text), "tokens": out.tokens,
                              "finish": out.finish_reason, "tries": attempt + 1, "repeated": repeated, "cut": False,
                              "talk": body != whole.strip()}
                if (repeated or not body.strip()) and attempt < cfg.section_tries:
                    again.append(i)
            pending = again
        out_records = []
        for i in range(len(jobs)):
            r = results[i]
            it = jobs[i][0]
            if r["repeated"] and cfg.cut_repeats:
                r["text"] = clean_part(so_far[i] or "", r["text"], it.get("lang", "en"))
                r["cut"] = True
            r["words"] = text.count_words(r["text"])
            # an empty reply drops the sample; a section emptied by cutting its repeats is left out
            r["empty"] = not r["text"].strip() and not r["cut"]
            out_records.append(r)
        return out_records

    # -- assembly ---------------------------------------------------------------------------
    def assemble(self, items: list[dict], plans: dict[str, dict], sections: dict[str, list[dict]]) -> dict:
        cfg = self.cfg
        texts, dataset = [], []
        for it in items:
            plan, secs = plans[it["id"]], sections[it["id"]]
            lang = it.get("lang", "en")
            row = {"id": it["id"], "query": it["query"], "lang": lang, "sections": len(secs),
                   "planned": len(plan["steps"])}
            if not plan["ok"]:
                row.update(text="", words=0, failed=["plan"], ok=False)
            elif any(s["empty"] for s in secs) or len(secs) < len(plan["steps"]):
                row.update(text="", words=0, failed=["empty"], ok=False)
            else:
                heads = headings([step["point"] for step in plan["steps"]]) if cfg.headings else None
                body = assemble([s["text"] for s in secs], heads)
                tokens = sum(s["tokens"] for s in secs)
                result = outcome(body, lang, tokens, "stop", self.filters)
                if result["words"] < cfg.min_words:
                    result["failed"].append("short")
                row.update(text=body, words=result["words"], tokens=tokens, failed=result["failed"],
                           ok=not result["failed"])
            texts.append(row)
            if row["ok"]:
                dataset.append({"messages": [{"role": "user", "content": it["query"]},
                                             {"role": "assistant", "content": row["text"]}],
                                "id": it["id"], "lang": lang, "words": row["words"], "origin": "agentwrite"})
        records.write_jsonl(self.folder / "texts.jsonl", texts)
        records.write_jsonl(self.folder / "dataset.jsonl", dataset)
        stats = self.statistics(plans, sections, texts)
        records.write_json(self.folder / "stats.json", stats)
        return stats

    def statistics(self, plans: dict, sections: dict, texts: list[dict]) -> dict:
        from .analysis import describe

        secs = [s for v in sections.values() for s in v]
        ok = [t for t in texts if t["ok"]]
        assembled = [t for t in texts if t["text"]]
        failed: dict[str, int] = {}
        for t in texts:
            for f in t["failed"]:
                failed[f] = failed.get(f, 0) + 1
        sec_tokens = sum(s["tokens"] for s in secs)
        return {
            "prompts": len(texts),
            "plans_ok": sum(p["ok"] for p in plans.values()),
            "plan_steps": describe([len(p["steps"]) for p in plans.values() if p["ok"]]),
            "sections": len(secs),
            "sections_rewritten": sum(s["tries"] > 1 for s in secs),
            "sections_repeated": sum(s["repeated"] for s in secs),
            "sections_cut": sum(s["cut"] for s in secs),
            "sections_cap_hit": sum(s["finish"] == "length" for s in secs),
            "sections_talk_dropped": sum(s.get("talk", False) for s in secs),
            "section_words": describe([s["words"] for s in secs]),
            "assembled": len(assembled),
            "ok": len(ok),
            "pass_rate": round(len(ok) / len(texts), 3) if texts else None,
            "failed": failed,
            "words_assembled": describe([t["words"] for t in assembled]),
            "words": describe([t["words"] for t in ok]),
            "repeated_10gram_rate": round(sum(text.repeated_ngram_rate(t["text"], t["lang"]) for t in assembled)
                                          / max(len(assembled), 1), 4),
            # this session's generation (a resumed run counts only what it generated itself)
            "generated": {**self.generated, "seconds": round(self.generated["seconds"], 1),
                          "section_tokens": sec_tokens},
        }

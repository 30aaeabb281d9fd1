"""Supervised fine-tuning of one role's LoRA adapter (QLoRA on a 4-bit base, or LoRA on a plain one).

A small, resumable PyTorch loop:

    chat records -> prompt-masked token ids -> length-grouped, right-padded batches
    -> token-level mean loss -> AdamW with a warm-up + cosine schedule

`train_role` trains the adapter of one role (the other role and the base stay frozen) and saves
it as a standard PEFT adapter folder. While it runs it keeps a checkpoint next to that folder
(`<out_dir>.ckpt/`), so a run that dies can pick up where it stopped and end with the same
weights an uninterrupted run would have given.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import faults, records
from .config import LOSSES, TrainConfig  # noqa: F401  (importable from here as well)
from .models import LoadedModel, use_role
from .progress import bar as progress_bar

log = logging.getLogger(__name__)

IGNORE = -100
MARKER = "sltk_train.json"
SKIP_REASONS = ("prompt_too_long", "no_target")
# Settings that change the trained weights; a checkpoint or finished adapter made with other
# values is not reused.
_RESULT_FIELDS = (
    "epochs", "lr", "scheduler", "warmup_ratio", "batch_size", "batch_tokens", "grad_accum",
    "max_seq_len", "weight_decay", "max_grad_norm", "seed", "loss",
)


class TrainError(ValueError):
    """Training cannot start or resume as asked; the message names the fix."""


class TrainDataError(TrainError):
    """A record that is malformed or does not fit the chat template."""


class SkipRecord(Exception):
    """A well-formed record with nothing to train on; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Example:
    """One tokenised record: ids, labels (IGNORE on the prompt) and whether it was cut."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def targets(self) -> int:
        return sum(label != IGNORE for label in self.labels)


# -- data -------------------------------------------------------------------------------------

def _ids(tokenizer, text: str) -> list[int]:
    # The chat template already writes every special token the model expects.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_messages(record) -> list[dict]:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        raise TrainDataError("A record needs 'messages': a list of at least a user and an assistant message.")
    if messages[-1].get("role") != "assistant":
        raise TrainDataError(
            f"The last message of a record must be the assistant's (the target); got '{messages[-1].get('role')}'."
        )
    return messages


def encode_check(records) -> list[str]:
    """What is wrong with chat records before any model loads: one line per bad record (record number)."""
    problems = []
    for number, record in enumerate(records, 1):
        try:
            messages = _check_messages(record)
            bad = [m for m in messages if not isinstance(m, dict) or not isinstance(m.get("content"), str)
                   or m.get("role") not in ("system", "user", "assistant")]
            if bad:
                raise TrainDataError(f"a message needs a role (system, user or assistant) and text content: {bad[0]!r}")
        except TrainDataError as exc:
            problems.append(f"record {number}: {exc}")
    return problems


def encode_record(tokenizer, record: dict, max_seq_len: int) -> Example:
    """Tokenise a chat record; only the last assistant turn (and the template's end of turn) is learned.

    The ids are the full conversation as the chat template renders it; the prompt (everything
    up to and including the assistant header) is labelled IGNORE. A sequence longer than
    `max_seq_len` loses its end. Raises SkipRecord when the prompt alone does not fit or the
    answer is empty (nothing to learn), TrainDataError when the record or the template does not fit.
    """
    messages = _check_messages(record)
    if not str(messages[-1].get("content") or "").strip():
        raise SkipRecord("no_target")
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt, full = _ids(tokenizer, prompt_text), _ids(tokenizer, full_text)
    if full[: len(prompt)] != prompt:
        at = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
        raise TrainDataError(
            f"The chat template's prompt (with the generation prompt) is not a token prefix of the full "
            f"conversation (they differ at token {at}: {tokenizer.decode(prompt[at:at + 8])!r} vs "
            f"{tokenizer.decode(full[at:at + 8])!r}). Training would not match generation; check the template "
            "(e.g. one that rewrites earlier turns) or strip leading whitespace from the assistant text."
        )
    if len(prompt) >= max_seq_len:
        raise SkipRecord("prompt_too_long")
    truncated = len(full) > max_seq_len
    full = full[:max_seq_len]
    labels = [IGNORE] * len(prompt) + full[len(prompt):]
    if len(full) == len(prompt):
        raise SkipRecord("no_target")
    return Example(full, labels, truncated)


def encode_records(tokenizer, records, max_seq_len: int) -> tuple[list[Example], dict]:
    """Encode every record; returns the examples and counts of skipped and truncated records."""
    examples, counts = [], {reason: 0 for reason in SKIP_REASONS} | {"truncated": 0}
    for i, record in enumerate(records):
        try:
            example = encode_record(tokenizer, record, max_seq_len)
        except SkipRecord as skip:
            counts[skip.reason] += 1
            continue
        except TrainDataError as exc:
            raise TrainDataError(f"Record {i}: {exc}") from exc
        counts["truncated"] += example.truncated
        examples.append(example)
    return examples, counts


def make_batches(lengths: list[int], batch_size: int = 1, batch_tokens: int | None = None) -> list[list[int]]:
    """Group indices of similar length: sort by length, then cut into consecutive batches.

    With `batch_tokens`, a batch grows while its padded size (count x longest) stays within it;
    a sequence longer than that forms a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if not batch_tokens:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches, current = [], []
    for i in order:  # ascending, so the newcomer is the longest of its batch
        if current and (len(current) + 1) * lengths[i] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def epoch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The order batches are visited in during `epoch` (a seeded shuffle)."""
    order = list(range(n_batches))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def collate(examples: list[Example], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input ids (pad_id), attention mask (0) and labels (IGNORE) on the padding."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# -- loss -------------------------------------------------------------------------------------

def token_mean_loss(logits: torch.Tensor, labels: torch.Tensor, num_targets: int | None = None) -> torch.Tensor:
    """Cross-entropy summed over every target token of the batch, divided by the number of targets.

    `labels` are aligned with the input ids (the shift happens here: logits at position t
    predict labels at t + 1). Every token weighs the same, however long its sequence; pass
    `num_targets` to divide by the targets of a whole accumulated step instead.
    """
    logits = logits[:, :-1].float()
    labels = labels[:, 1:].to(logits.device)
    total = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    count = int((labels != IGNORE).sum()) if num_targets is None else num_targets
    return total / max(count, 1)


def sequence_mean_loss(logits: torch.Tensor, labels: torch.Tensor, num_sequences: int | None = None) -> torch.Tensor:
    """Each sequence's token-mean cross-entropy, summed and divided by the number of sequences.

    Pass `num_sequences` to divide by the sequences of a whole accumulated step instead of this batch's.
    """
    logits = logits[:, :-1].float()
    labels = labels[:, 1:].to(logits.device)
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(labels.shape)
    counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
    per_sequence = per_token.sum(dim=1) / counts
    return per_sequence.sum() / max(num_sequences or labels.size(0), 1)


def _supports_logits_to_keep(model) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _batch_loss(model, batch: dict, num_targets: int | None, trim: bool, loss: str = "token",
                num_sequences: int | None = None) -> torch.Tensor:
    """Forward one batch; with `trim`, logits are only computed from just before the first target on
    (the vocabulary projection of long prompts is the largest activation in the model)."""
    labels = batch["labels"]
    kwargs = {}
    if trim:
        first = int((labels != IGNORE).int().argmax(dim=1).min())
        start = max(first - 1, 0)
        kwargs["logits_to_keep"] = torch.arange(start, labels.size(1), device=labels.device)
        labels = labels[:, start:]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **kwargs)
    if loss == "sequence":
        return sequence_mean_loss(out.logits, labels, num_sequences)
    return token_mean_loss(out.logits, labels, num_targets)


@torch.inference_mode()
def eval_loss(loaded: LoadedModel, role: str | None, records, max_seq_len: int = 16384, batch_size: int = 1) -> float:
    """Token-level mean loss of a role (or the base, for None) on chat records."""
    examples, _ = encode_records(loaded.tokenizer, records, max_seq_len)
    if not examples:
        raise TrainError("No record has anything to evaluate (all skipped).")
    model, pad_id = loaded.model, _pad_id(loaded.tokenizer)
    trim, device = _supports_logits_to_keep(model), _device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with use_role(model, role):
            for batch in make_batches([len(e.input_ids) for e in examples], batch_size):
                chunk = [examples[i] for i in batch]
                n = sum(e.targets for e in chunk)
                total += float(_batch_loss(model, collate(chunk, pad_id, device), None, trim)) * n
                count += n
    finally:
        model.train(was_training)
    return total / count


# -- model state ------------------------------------------------------------------------------

def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def _check_role(model, role: str) -> None:
    from peft import PeftModel

    if not isinstance(model, PeftModel) or role not in model.peft_config:
        known = sorted(getattr(model, "peft_config", {}) or {})
        raise TrainError(
            f"The model has no adapter for role '{role}' (adapters: {known}). Attach one first with "
            "sltk.models.add_roles(), or load last iteration's with load_roles(..., trainable=True)."
        )


def role_parameters(model, role: str) -> dict[str, torch.nn.Parameter]:
    """The parameters of one role's adapter (its LoRA matrices and any modules it saves), by name."""
    pattern = re.compile(rf"(^|\.)(lora_\w+|modules_to_save)\.{re.escape(role)}(\.|$)")
    params = {name: p for name, p in model.named_parameters() if pattern.search(name)}
    if not params:
        raise TrainError(f"Role '{role}' has no adapter parameters to train.")
    return params


def is_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on for a transformers model."""
    if hasattr(type(model), "is_activation_checkpointing"):  # the newer name; the old one warns
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def _set_checkpointing(model, on: bool) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs) if on else model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs) if on else (
            model.gradient_checkpointing_disable())


@contextlib.contextmanager
def _training_mode(model, params: dict, gradient_checkpointing: bool):
    """Train only `params`; undo every change (grad flags, checkpointing, train mode) on exit."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    base = model.get_base_model()
    checkpointing = gradient_checkpointing and not is_checkpointing(base)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    if checkpointing:
        _set_checkpointing(base, True)
        # What PEFT's prepare_model_for_kbit_training does for checkpointing, without its casting of
        # norms to float32: inputs that need grads keep a re-entrant fallback working too.
        base.enable_input_require_grads()
    model.train()
    try:
        yield
    finally:
        model.eval()
        if checkpointing:
            base.disable_input_require_grads()
            _set_checkpointing(base, False)
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))


# -- checkpoints and output -------------------------------------------------------------------

def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    """Where `train_role` keeps its checkpoint for `out_dir`: the sibling folder `<name>.ckpt`."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.ckpt"


def is_complete(out_dir: str | os.PathLike) -> bool:
    """True when `out_dir` holds an adapter that `train_role` finished."""
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    if not marker.is_file() or not (out_dir / "adapter_model.safetensors").is_file():
        return False
    return bool(json.loads(marker.read_text()).get("complete"))


def _fingerprint(examples: list[Example], config: TrainConfig, role: str) -> str:
    digest = hashlib.sha256(json.dumps([role, {k: getattr(config, k) for k in _RESULT_FIELDS}]).encode())
    for e in examples:
        digest.update(array("q", e.input_ids).tobytes())
        digest.update(array("q", e.labels).tobytes())
    return digest.hexdigest()


def _raise_disk_full(exc: Exception, folder: Path, path: Path) -> None:
    """A writer's own error (torch's, safetensors') on a nearly full disk, raised as the OSError it is."""
    if not isinstance(exc, OSError) and shutil.disk_usage(folder).free < 64 << 20:
        raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc


def _save_adapter(model, role: str, out_dir: Path, stats: dict, state_dict: dict | None = None) -> None:
    """Write the role's adapter as a PEFT folder at `out_dir`, with the completion marker, in one rename.

    `state_dict`: the whole model's weights gathered from the processes that shard them (FSDP, ZeRO-3)."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), selected_adapters=[role], state_dict=state_dict)
        written = tmp / role if (tmp / role).is_dir() else tmp  # PEFT nests every adapter but "default"
        (written / MARKER).write_text(json.dumps(stats, indent=1))
    except Exception as exc:  # a full disk (safetensors raises its own error type): nothing half-written stays
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_disk_full(exc, out_dir.parent, out_dir)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(written, out_dir)
    shutil.rmtree(tmp, ignore_errors=True)


def _load_finished(model, role: str, out_dir: Path, fingerprint: str) -> dict:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    stats = json.loads((out_dir / MARKER).read_text())
    if stats.get("fingerprint") != fingerprint:
        raise TrainError(
            f"{out_dir} holds an adapter trained on other records or settings. Use another folder, or "
            "retrain with resume=False."
        )
    result = set_peft_model_state_dict(model, load_file(str(out_dir / "adapter_model.safetensors")), adapter_name=role)
    if getattr(result, "unexpected_keys", None):
        raise TrainError(f"{out_dir} does not fit role '{role}' of this model: {result.unexpected_keys[:3]} …")
    return stats | {"loaded_existing": True}


# -- training ---------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint-"  # transformers.Trainer's name for its checkpoint folders


class LengthBatches:
    """The batch sampler of a training: `make_batches`' length-grouped batches, in a seeded order per epoch.

    The Trainer sets the epoch (`set_epoch`) before each pass, so a resumed run visits the batches
    in the order the uninterrupted one did; under several processes accelerate hands every
    process its own share of each round of batches.
    """

    def __init__(self, batches: list[list[int]], seed: int):
        self.batches, self.seed, self.epoch = batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter([self.batches[b] for b in epoch_order(len(self.batches), self.seed, self.epoch)])


def _trainer_class():
    """`transformers.Trainer` with sltk's batches and loss (built on first use: transformers imports slowly)."""
    from transformers import Trainer

    class RoleTrainer(Trainer):
        """A Trainer whose batches are `LengthBatches` and whose loss is `token_mean_loss` (or
        `sequence_mean_loss`) over every batch of a step and every process, from trimmed logits."""

        def __init__(self, *args, batches: LengthBatches, loss: str, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches, self.loss = batches, loss
            self.trim = _supports_logits_to_keep(self.model)
            # The loss below is already divided by the whole step's targets: no division by the
            # accumulation steps on top, and Trainer counts the targets (num_items_in_batch) for it.
            self.loss_is_scaled_for_ga = True
            self.model_accepts_loss_kwargs = True
            self.step_sums = torch.zeros(3, dtype=torch.float64)  # loss, target tokens, tokens (this process)

        def get_train_dataloader(self):
            from torch.utils.data import DataLoader

            loader = DataLoader(self.train_dataset, batch_sampler=self.batches, collate_fn=self.data_collator)
            return self.accelerator.prepare(loader)

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            samples, items = super().get_batch_samples(epoch_iterator, num_batches, device)
            if self.loss == "sequence" and samples:  # divide by the step's sequences instead of its targets
                items = torch.tensor(sum(int(s["labels"].size(0)) for s in samples), device=device)
                if self.accelerator.num_processes > 1:
                    items = self.accelerator.gather(items).sum()
            return samples, items

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                raise NotImplementedError("RoleTrainer computes the training loss only")
            count = int(num_items_in_batch) if num_items_in_batch is not None else None
            loss = _batch_loss(model, inputs, count, self.trim, self.loss, count)
            # Each process divided by the count of all processes; their gradients are averaged.
            loss = loss * self.accelerator.num_processes
            labels = inputs["labels"]
            self.step_sums += torch.tensor([float(loss.detach()), float((labels != IGNORE).sum()),
                                            float(inputs["attention_mask"].sum())], dtype=torch.float64)
            return loss

    return RoleTrainer


def _callback_class():
    from transformers import TrainerCallback

    class Bookkeeping(TrainerCallback):
        """Per-step statistics and progress, checkpoints at sltk's moments, and the early stop.

        A checkpoint is `checkpoint-<step>/` as the Trainer writes it, made whole by `MARKER` (the
        fingerprint and statistics so far), written last; older checkpoints go once it is there.
        """

        def __init__(self, trainer, stats: dict, ckpt: Path, steps_per_epoch: int, total_steps: int,
                     config: TrainConfig, stop_after: int | None, bar):
            self.trainer, self.stats, self.ckpt, self.bar = trainer, stats, ckpt, bar
            self.steps_per_epoch, self.total_steps, self.config, self.stop_after = (
                steps_per_epoch, total_steps, config, stop_after)
            self.started, self.seconds_before, self.tokens_here = time.perf_counter(), stats["seconds"], 0

        def on_step_end(self, args, state, control, **kwargs):
            trainer, stats = self.trainer, self.stats
            sums = trainer.step_sums.to(trainer.accelerator.device)
            if trainer.accelerator.num_processes > 1:
                sums = trainer.accelerator.reduce(sums, "sum")
            loss = float(sums[0]) / trainer.accelerator.num_processes
            targets, tokens = int(sums[1]), int(sums[2])
            trainer.step_sums.zero_()
            step = state.global_step
            elapsed = time.perf_counter() - self.started
            self.tokens_here += tokens
            stats["losses"].append(loss)
            stats.update(steps=step, epochs=step / self.steps_per_epoch, final_loss=loss,
                         seconds=self.seconds_before + elapsed, target_tokens=stats["target_tokens"] + targets,
                         tokens=stats["tokens"] + tokens)
            speed = self.tokens_here / max(elapsed, 1e-9)
            if self.bar is not None:
                self.bar.set_postfix_str(f"loss {loss:.4f}, {speed:.0f} tok/s", refresh=False)
                self.bar.update(1)
            if self.config.log_every and step % self.config.log_every == 0 and state.is_world_process_zero:
                log.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s", stats["role"], step, self.total_steps,
                         loss, trainer.lr_scheduler.get_last_lr()[0], speed)
            stopping = self.stop_after is not None and step >= self.stop_after
            every = self.config.save_every
            due = step % self.steps_per_epoch == 0 or stopping or (every and step % every == 0)
            control.should_save = bool(due and step < self.total_steps)
            if stopping:
                control.should_training_stop = True
            return control

        def on_epoch_begin(self, args, state, control, **kwargs):
            # The epoch's batch order, also where the Trainer's own set_epoch does not reach the batch
            # sampler (several processes resuming mid-epoch: accelerate's sharding and skipping wrap it).
            self.trainer.batches.set_epoch(int(state.epoch + 1e-6))

        def on_save(self, args, state, control, **kwargs):
            self.trainer.accelerator.wait_for_everyone()  # every process's files are written
            if not state.is_world_process_zero:
                return
            folder = self.ckpt / f"{CHECKPOINT_PREFIX}{state.global_step}"
            fault = faults.due(self.ckpt.name)
            if fault == "torn":  # killed while the Trainer's files are written: no marker yet
                faults.kill()
            marker = {k: self.stats[k] for k in ("fingerprint", "losses", "target_tokens", "tokens", "seconds")}
            marker["processes"] = self.trainer.accelerator.num_processes
            records.write_json(folder / MARKER, marker)
            for old in _checkpoints(self.ckpt):
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)
            if fault:
                faults.kill()

    return Bookkeeping


def _checkpoints(ckpt: Path) -> list[Path]:
    """The checkpoint folders under `ckpt`, oldest step first."""
    found = [p for p in ckpt.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def last_checkpoint(ckpt: Path, fingerprint: str, processes: int) -> tuple[Path, dict] | None:
    """The newest whole checkpoint under `ckpt` and its marker; None when there is none.

    A checkpoint without its marker was cut short by a kill and is passed over. Raises TrainError
    for a checkpoint of other records or settings, or of another number of processes.
    """
    for folder in reversed(_checkpoints(ckpt)):
        if not (folder / MARKER).is_file():
            continue
        marker = json.loads((folder / MARKER).read_text())
        if marker.get("fingerprint") != fingerprint:
            raise TrainError(
                f"The checkpoint in {ckpt} was made with other records or settings. Resume with the same "
                "ones, or start over with resume=False (which deletes it)."
            )
        if marker.get("processes", 1) != processes:
            raise TrainError(
                f"The checkpoint in {ckpt} was made by {marker.get('processes', 1)} training processes, and "
                f"{processes} are running. Resume with the same number (accelerate launch --num_processes "
                f"{marker.get('processes', 1)}), or start over with resume=False (which deletes it)."
            )
        return folder, marker
    return None


def _arguments(config: TrainConfig, ckpt: Path, device: torch.device):
    """The Trainer's settings for `config` on the model's `device`; `warmup_steps` is set once the number
    of steps is known."""
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(ckpt),
        num_train_epochs=config.epochs,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.scheduler,
        max_grad_norm=config.max_grad_norm or 0.0,
        optim="adamw_torch",
        seed=config.seed,
        save_strategy="steps",  # saved when Bookkeeping says so (save_steps is never reached)
        save_steps=1 << 30,
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        average_tokens_across_devices=True,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        use_cpu=device.type == "cpu",
    )
    # One process trains on its one device: with several GPUs visible the Trainer would otherwise wrap
    # the model in DataParallel (as it already does not for a model placed across devices).
    if args.device.type == "cuda" and args.world_size == 1:
        args._n_gpu = 1
    return args


@contextlib.contextmanager
def _kept_random_state():
    """The caller's random streams (torch, Python, NumPy) as they were: the Trainer seeds them all."""
    import numpy

    py, np_state = random.getstate(), numpy.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            numpy.random.set_state(np_state)


def train_role(
    loaded: LoadedModel,
    role: str,
    records,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> dict:
    """Fine-tune the adapter of `role` on chat records and save it as a PEFT folder at `out_dir`.

    The adapter must already be on `loaded.model` (a PeftModel): a fresh one from `add_roles`,
    or last iteration's from `load_roles(..., trainable=True)`, which is then trained further.
    Only that adapter changes. The model comes back in eval mode, with its previous active
    adapter, and without gradient checkpointing. The steps are transformers' `Trainer`'s, so
    `accelerate launch` runs the same call in several processes (DDP, FSDP or DeepSpeed, as its
    configuration says); a step is then `grad_accum` batches in every process.

    Resuming: a checkpoint is written to `checkpoint_dir(out_dir)` at each epoch end and every
    `config.save_every` steps. With `resume=True` a run continues from it (same records, settings
    and number of processes required), and a finished `out_dir` is not trained again: its weights
    are loaded into the role and its stats returned (`loaded_existing: True`). `resume=False`
    deletes the checkpoint and trains from the adapter as it is. `stop_after_steps` ends the run
    early right after writing a checkpoint at that step (`complete: False` in the stats).

    Returns stats: steps, epochs, final_loss, losses (per step), target_tokens, tokens, seconds,
    examples, skipped ({prompt_too_long, no_target}), truncated, resumed_from_step, complete.
    """
    config = config or TrainConfig()
    out_dir, ckpt = Path(out_dir), checkpoint_dir(out_dir)
    model = loaded.model
    _check_role(model, role)
    examples, counts = encode_records(loaded.tokenizer, records, config.max_seq_len)
    if not examples:
        raise TrainError(f"No record has anything to train on (skipped: {counts}).")
    fingerprint = _fingerprint(examples, config, role)
    if resume and is_complete(out_dir):
        return _load_finished(model, role, out_dir, fingerprint)
    args = _arguments(config, ckpt, _device(model))
    processes = args.world_size  # the processes `accelerate launch` (or torchrun) started
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    found = last_checkpoint(ckpt, fingerprint, processes) if resume else None

    batches = make_batches([len(e.input_ids) for e in examples], config.batch_size, config.batch_tokens)
    steps_per_epoch = math.ceil(math.ceil(len(batches) / processes) / config.grad_accum)
    total_steps = config.epochs * steps_per_epoch
    args.warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    stats = {
        "role": role, "steps": 0, "epochs": 0.0, "total_steps": total_steps, "final_loss": None, "losses": [],
        "target_tokens": 0, "tokens": 0, "seconds": 0.0, "examples": len(examples),
        "skipped": {r: counts[r] for r in SKIP_REASONS}, "truncated": counts["truncated"],
        "resumed_from_step": 0, "complete": False, "config": asdict(config), "fingerprint": fingerprint,
    }
    if found:
        step = int(found[0].name[len(CHECKPOINT_PREFIX):])
        stats.update({k: found[1][k] for k in ("losses", "target_tokens", "tokens", "seconds")})
        stats.update(steps=step, epochs=step / steps_per_epoch, resumed_from_step=step,
                     final_loss=stats["losses"][-1] if stats["losses"] else None)
    params = role_parameters(model, role)
    pad_id = _pad_id(loaded.tokenizer)
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    from transformers import PrinterCallback

    with (
        use_role(model, role),
        _kept_random_state(),
        torch.enable_grad(),
        _training_mode(model, params, config.gradient_checkpointing),
    ):
        trainer = _trainer_class()(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=lambda rows: collate([Example(r["input_ids"], r["labels"]) for r in rows], pad_id),
            batches=LengthBatches(batches, config.seed),
            loss=config.loss,
        )
        trainer.remove_callback(PrinterCallback)  # its end-of-training summary; the bar and the log say it
        main = trainer.is_world_process_zero()
        bar = progress_bar(total_steps, f"train {role}", "step", stats["steps"], progress and main)
        trainer.add_callback(_callback_class()(trainer, stats, ckpt, steps_per_epoch, total_steps, config,
                                               stop_after_steps, bar))
        try:
            trainer.train(resume_from_checkpoint=str(found[0]) if found else None)
        except Exception as exc:  # a checkpoint's writer on a full disk: said as the OSError it is
            _raise_disk_full(exc, out_dir.parent, ckpt)
            raise
        finally:
            if bar is not None:
                bar.close()
        trainer.accelerator.wait_for_everyone()
    if stats["steps"] == total_steps:
        stats["complete"] = True
        sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
        # Gathering sharded weights takes every process; the main one writes them.
        weights = trainer.accelerator.get_state_dict(trainer.model_wrapped) if sharded else None
        if main:
            _save_adapter(model, role, out_dir, stats, weights)
            shutil.rmtree(ckpt, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
    return stats

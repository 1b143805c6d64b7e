"""The embedded default backend: Hugging Face transformers, CPU or GPU.

Faster than calling ``generate`` per request because it (1) prefills each prompt once and
copies its KV cache to the n samples instead of prefilling n copies, (2) decodes large
batches that span many prompts of a tree level, sorted by length so padding stays small, and
(3) drops finished rows from the batch and the cache, so short answers stop costing,
(4) writes each step's keys and values in place (``kv_cache``), (5) keeps each prompt's keys
and values once for its n samples instead of n copies, (6) attends one query token with
small matmuls instead of the CPU flash kernel (``decode_attention``), (7) samples by
inverse CDF in a reused workspace (``sampling``), (8) prefills the template head that
every prompt of a batch starts with once, for one row, and (9) a longer prefix a group of
prompts shares once per group (``_prefill``, ``prefix_groups``).

Only models ``decoder_support`` allows take that path; any other model (another
architecture, sliding-window layers, softcapping, sinks) is served by transformers' own
``generate``, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from malt_lake.backends.base import (
    BackendError,
    Completion,
    GenerationRequest,
    SamplingParams,
    cut_at_stop,
    looping,
    stop_index,
)
from malt_lake.errors import ConfigError, HubUnavailable

# Finished rows are dropped from the batch and cache once the live share falls to this: each
# drop copies the cache, so it happens a logarithmic number of times, not every few steps.
COMPACT_BELOW = 0.75
# a prompt head shared by the whole batch is prefilled once when at least this long
MIN_SHARED_HEAD = 16
# tokens per prefill forward on a CPU (bench/prefill_chunks.py): a batch's activations
# stream through memory for every elementwise op; chunks of this size stay in cache
PREFILL_CHUNK_TOKENS = 4096
# live rows are checked for a stop pattern (a batched detokenization) and for a loop every
# this many steps
STOP_CHECK_EVERY = 4

log = logging.getLogger(__name__)


def resolve_model(model: str) -> tuple[str, Path | str]:
    """(model id to record, what to load from) for 'embedded', a local dir or a hub id."""
    from malt_lake.backends import embedded

    if model in {"embedded", "", None}:
        return embedded.MODEL_ID, embedded.embedded_model_dir()
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model directory {path} has no config.json; point the model "
                              "setting at a Hugging Face model directory")
        return str(path.resolve()), path
    if model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1):
        raise ConfigError(f"model path {model!r} does not exist")
    return model, model  # a hub id, resolved on load


class TransformersBackend:
    """Batched sampling on one base model; LoRA adapters chosen per request."""

    def __init__(self, model: str = "embedded", device: str | None = None,
                 dtype: str = "bfloat16", max_batch_rows: int = 192,
                 prefill_tokens: int = 32_768, share_prompt_cache: bool = True,
                 prefill_chunk_tokens: int | str | None = "auto") -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from malt_lake.backends.decode_attention import register
        from malt_lake.backends.decoder_support import fallback_attention, unsupported_reason

        self.model_id, source = resolve_model(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_batch_rows = max_batch_rows
        self.prefill_tokens = prefill_tokens
        self.share_prompt_cache = share_prompt_cache  # False: copy it per sample (benchmarks)
        # tokens per prefill forward (None: the whole batch at once); a CPU runs a big batch
        # faster in chunks that keep activations in cache, a GPU in one forward
        self.prefill_chunk_tokens = (
            (None if self.device.startswith("cuda") else PREFILL_CHUNK_TOKENS)
            if prefill_chunk_tokens == "auto" else prefill_chunk_tokens)
        load = {"trust_remote_code": False}
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline,
                                                           **load)
            # the custom decoder only for the models it is written for (decoder_support)
            config = AutoConfig.from_pretrained(source, local_files_only=offline, **load)
            self.unsupported = unsupported_reason(config)
            attention = fallback_attention(config) if self.unsupported else register()
            if self.unsupported:
                log.warning("%s: %s; decoding with transformers' generate (attention: %s) "
                            "instead of the fast decoder", self.model_id, self.unsupported,
                            attention or "transformers' default")
            self.model = AutoModelForCausalLM.from_pretrained(
                source, config=config, dtype=getattr(torch, dtype), use_safetensors=True,
                local_files_only=offline, attn_implementation=attention,
                **load).to(self.device).eval()
        except OSError as exc:
            if isinstance(source, str):
                raise HubUnavailable(
                    f"cannot load model {source!r}: not a local directory and the hub is not "
                    f"reachable ({exc.__class__.__name__}). Download it where you have network "
                    "and set the model to its directory") from exc
            raise ConfigError(f"cannot load model from {source}: {exc}") from exc
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]),
                               self.tokenizer.eos_token_id} - {None})
        self.adapters: dict[str, str] = {}
        self.merged_adapter: str | None = None   # the adapter merged into the weights now
        self.base_weights: dict[str, torch.Tensor] = {}  # LoRA-targeted weights, unmerged
        # called after every decode step with the tokens it produced (live progress)
        self.on_step: Callable[[int], None] | None = None

    # -- adapters ---------------------------------------------------------------------------
    def _use_adapter(self, adapter: str | None) -> None:
        from malt_lake.backends.adapters import activate_adapter

        self.model = activate_adapter(self, adapter)

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest],
                 params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion] | None] = [None] * len(requests)
        by_adapter: dict[str | None, list[int]] = {}
        for index, request in enumerate(requests):
            by_adapter.setdefault(request.adapter, []).append(index)
        for adapter, indices in by_adapter.items():
            self._use_adapter(adapter)
            prompts = [self._encode(requests[i].messages) for i in indices]
            order = _batch_order(prompts)
            for batch in self._batches(order, prompts, params.n):
                seed = _batch_seed([requests[indices[j]] for j in batch], params)
                texts = self._sample([prompts[j] for j in batch], params, seed)
                for j, completions in zip(batch, texts, strict=True):
                    results[indices[j]] = completions
        return [r if r is not None else [] for r in results]

    def _encode(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def _batches(self, order: list[int], prompts: list[list[int]], n: int) -> list[list[int]]:
        per_batch = max(1, self.max_batch_rows // n)
        batches, current, longest = [], [], 0
        for j in order:
            # the order is longest first only between groups (``_batch_order``)
            longest = max(longest, len(prompts[j]))
            if current and (len(current) >= per_batch
                            or longest * (len(current) + 1) > self.prefill_tokens):
                batches.append(current)
                current, longest = [], len(prompts[j])
            current.append(j)
        if current:
            batches.append(current)
        return batches

    def _sample(self, prompts: list[list[int]], params: SamplingParams,
                seed: int) -> list[list[Completion]]:
        import torch

        try:
            with torch.inference_mode():
                if self.unsupported:
                    return self._sample_with_generate(prompts, params, seed)
                return self._sample_unsafe(prompts, params, seed)
        except torch.OutOfMemoryError as exc:
            raise BackendError(f"out of memory with {len(prompts)} prompts x n={params.n}; "
                               "lower max_batch_rows") from exc

    def _sample_unsafe(self, prompts: list[list[int]], params: SamplingParams,
                       seed: int) -> list[list[Completion]]:
        import torch

        from malt_lake.backends.kv_cache import reserved_cache, share_prefix
        from malt_lake.backends.sampling import TokenSampler

        device, n = self.device, params.n
        cache = reserved_cache(params.max_tokens + 1)
        logits, mask, order = self._prefill(prompts, cache)
        prompts = [prompts[i] for i in order]  # cache row r holds prompt order[r]
        # one prefill per prompt; its n samples share that cache (stored once). With n = 1
        # too: decode attention then reads the prompt from contiguous storage and the answer
        # from a whole buffer, which batched matmuls take without copying
        if self.share_prompt_cache:
            share_prefix(cache, n)
        else:
            cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        sampler = TokenSampler(params, torch.Generator(device=device).manual_seed(seed))
        rows = torch.arange(len(prompts) * n, device=device)  # original row of each live row
        tokens: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        # why each row ended: None while live, "stop" (end of sequence or a stop pattern),
        # "length" (a loop; a row that runs out of budget keeps None)
        ended: list[str | None] = [None] * (len(prompts) * n)
        eos = torch.tensor(self.eos_ids, device=device)
        for step in range(params.max_tokens):
            next_tokens = sampler(logits)
            done_now = torch.isin(next_tokens, eos)
            for row, token, done in zip(rows.tolist(), next_tokens.tolist(), done_now.tolist(),
                                        strict=True):
                if ended[row]:
                    continue
                if done:
                    ended[row] = "stop"
                else:
                    tokens[row].append(token)
            if (step + 1) % STOP_CHECK_EVERY == 0:
                if params.stop:
                    self._finish_stopped(tokens, ended, rows.tolist(), params.stop)
                if params.cut_loops:
                    _finish_looping(tokens, ended, rows.tolist())
            live = torch.tensor([ended[r] is None for r in rows.tolist()], device=device)
            n_live = int(live.sum())
            if self.on_step is not None:
                self.on_step(n_live)
            if n_live == 0 or step == params.max_tokens - 1:
                break
            if n_live <= COMPACT_BELOW * len(rows):  # geometric: few copies of the cache
                keep = live.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, mask, next_tokens = rows[keep], mask[keep], next_tokens[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = mask.sum(-1, keepdim=True) - 1
            out = self.model(input_ids=next_tokens[:, None], attention_mask=mask,
                             position_ids=positions, past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :]
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        completions = [
            cut_at_stop(Completion(text, len(prompts[i // n]), len(tokens[i]),
                                   ended[i] or "length"), params.stop)
            for i, text in enumerate(texts)
        ]
        results: list[list[Completion]] = [[] for _ in prompts]
        for row, prompt in enumerate(order):
            results[prompt] = completions[row * n:(row + 1) * n]
        return results

    def _finish_stopped(self, tokens: list[list[int]], ended: list[str | None],
                        rows: list[int], stop: Sequence[str]) -> None:
        """End ("stop") the live rows whose text so far matches a stop pattern (the text is
        cut at the match when the batch ends)."""
        live = [row for row in rows if ended[row] is None]
        if not live:  # batch_decode([]) returns one text, not none
            return
        texts = self.tokenizer.batch_decode([tokens[row] for row in live],
                                            skip_special_tokens=True)
        for row, text in zip(live, texts, strict=True):
            if stop_index(text, stop) is not None:
                ended[row] = "stop"

    def _sample_with_generate(self, prompts: list[list[int]], params: SamplingParams,
                              seed: int) -> list[list[Completion]]:
        """transformers' ``generate`` on the left-padded batch: the maintained path for the
        models the custom decoder does not serve. Same request contract (n samples per
        prompt, finish reasons, token counts); draws come from ``seed``."""
        import torch
        from transformers import GenerationConfig

        pad, width = self.tokenizer.pad_token_id, max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts],
                                 device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                            device=self.device)
        sample = params.temperature > 0
        # only the request's settings: a checkpoint's own generation_config (repetition
        # penalty, stop strings, min tokens...) is not part of the request contract
        config = GenerationConfig(
            max_new_tokens=params.max_tokens, do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None, top_k=0 if sample else None,
            pad_token_id=pad, eos_token_id=self.eos_ids)
        device = self.model.device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the caller's global RNG state is kept
            torch.manual_seed(seed)
            # n rows per prompt (generate refuses num_return_sequences > 1 when greedy)
            out = self.model.generate(
                input_ids=input_ids.repeat_interleave(params.n, dim=0),
                attention_mask=mask.repeat_interleave(params.n, dim=0),
                generation_config=config)
        completions = []
        for i, row in enumerate(out[:, width:].tolist()):
            stop = next((j for j, token in enumerate(row) if token in self.eos_ids), None)
            tokens = row if stop is None else row[:stop]
            completions.append(cut_at_stop(Completion(
                self.tokenizer.decode(tokens, skip_special_tokens=True),
                len(prompts[i // params.n]), len(tokens),
                "length" if stop is None else "stop"), params.stop))
        return [completions[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def _prefill(self, prompts: list[list[int]], cache):
        """Run the prompts into ``cache``; returns (last logits, attention mask so far, the
        prompt of each cache row).

        Prompts of one role and dataset start with the same template (system prompt and
        instructions: 50 of the generator's ~85 tokens). That common head is run once, for
        one row, and copied to every row's cache. Prompts that share more than the head
        (``prefix_groups``: an answer's critiques, a question's chains) have that part run
        once per group and copied to each member's row; the rows then go longest rest
        first, so chunks of rows pad little. Only the rest of each prompt is run per row.
        Each part is left-padded; positions count real tokens only, so each row sees
        exactly what a prefill of its whole prompt would have computed."""
        import torch

        from malt_lake.backends.kv_cache import repeat_rows, select_rows
        from malt_lake.backends.prefix_groups import prefix_groups

        device = self.device
        head = _shared_head(prompts)
        if head:
            self.model(input_ids=torch.tensor([prompts[0][:head]], device=device),
                       past_key_values=cache, use_cache=True, logits_to_keep=1)
        rests = [p[head:] for p in prompts]
        order = list(range(len(prompts)))
        mask = torch.ones((1, head), dtype=torch.long, device=device)
        groups = prefix_groups(rests)
        if groups is not None:
            # each group's shared part, once: one row per group, longest first
            by_length = sorted(range(len(groups.shared)), key=lambda g: -groups.shared[g])
            row_of = {group: row for row, group in enumerate(by_length)}
            parts = [[] for _ in groups.shared]
            for rest, group in zip(rests, groups.group_of, strict=True):
                if group >= 0 and not parts[row_of[group]]:
                    parts[row_of[group]] = rest[:groups.shared[group]]
            if head:
                repeat_rows(cache, len(parts), len(parts[0]))
            _, mask = self._prefill_part(cache, parts, mask.expand(len(parts), head))
            rests = [rest[groups.shared_by(i):] for i, rest in enumerate(rests)]
            order.sort(key=lambda i: -len(rests[i]))
            # a prompt on its own takes any group's row: its mask hides that group's part
            index = torch.tensor([row_of.get(groups.group_of[i], 0) for i in order],
                                 device=device)
            mask = mask[index]
            alone = torch.tensor([groups.group_of[i] < 0 for i in order], device=device)
            mask[alone, head:] = 0
            select_rows(cache, index, len(rests[order[0]]))
            rests = [rests[i] for i in order]
        elif head:
            repeat_rows(cache, len(prompts), max(len(r) for r in rests))
        logits, mask = self._prefill_part(cache, rests, mask.expand(len(prompts), -1))
        return logits, mask, order

    def _prefill_part(self, cache, parts: list[list[int]], past_mask):
        """One row per part, each left-padded to the longest, after what is cached
        (``past_mask``: which cached positions each row sees); returns (last logits, the
        rows' whole mask)."""
        import torch

        from malt_lake.backends.kv_cache import prefill_in_chunks

        device, pad = self.device, self.tokenizer.pad_token_id
        width = max(len(p) for p in parts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in parts], device=device)
        mask = torch.cat([past_mask, torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in parts], device=device)], dim=-1)
        past = past_mask.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]

        def forward(rows: slice, skip: int) -> torch.Tensor:
            return self.model(input_ids=input_ids[rows, skip:], attention_mask=mask[rows],
                              position_ids=positions[rows, skip:], past_key_values=cache,
                              use_cache=True, logits_to_keep=1).logits[:, -1, :]

        chunk_rows = len(parts) if self.prefill_chunk_tokens is None else \
            max(1, self.prefill_chunk_tokens // (past + width))
        return prefill_in_chunks(cache, [len(p) for p in parts], chunk_rows, forward), mask

    def close(self) -> None:
        self.model = None


def _finish_looping(tokens: list[list[int]], ended: list[str | None], rows: list[int]) -> None:
    """End the live rows whose tokens so far end in a loop, as truncated ("length")."""
    for row in rows:
        if ended[row] is None and looping(tokens[row]):
            ended[row] = "length"


def _batch_order(prompts: list[list[int]]) -> list[int]:
    """Longest first, so a batch's rows pad little, except that prompts sharing a prefix
    (``prefix_groups``) stay side by side, to land in one batch (unless a batch's row or
    token limit splits them) and prefill that part once: a group goes where its longest
    prompt would."""
    from malt_lake.backends.prefix_groups import prefix_groups

    # grouped as ``_prefill`` will group them: past the template head they all share
    head = _shared_head(prompts)
    groups = prefix_groups([p[head:] for p in prompts])
    if groups is None:
        return sorted(range(len(prompts)), key=lambda j: -len(prompts[j]))
    longest = [0] * len(groups.shared)
    for j, group in enumerate(groups.group_of):
        if group >= 0:
            longest[group] = max(longest[group], len(prompts[j]))
    return sorted(range(len(prompts)), key=lambda j: (
        -(longest[groups.group_of[j]] if groups.group_of[j] >= 0 else len(prompts[j])),
        groups.group_of[j], -len(prompts[j])))


def _shared_head(prompts: list[list[int]]) -> int:
    """The template head ``_prefill`` runs once for the whole batch: the tokens every
    prompt starts with, when there are at least ``MIN_SHARED_HEAD`` (else 0)."""
    head = _common_head(prompts) if len(prompts) > 1 else 0
    return head if head >= MIN_SHARED_HEAD else 0


def _common_head(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (the prefill
    must end on a token of the prompt itself to give its next-token logits)."""
    first, shortest = prompts[0], min(len(p) for p in prompts)
    head = 0
    while head < shortest - 1 and all(p[head] == first[head] for p in prompts):
        head += 1
    return head


def _batch_seed(requests: list[GenerationRequest], params: SamplingParams) -> int:
    """One generator per batch, seeded by every request's id and seed: each row draws its own
    stream within it, and a request with another seed changes the whole batch's draws."""
    key = "|".join(f"{r.request_id}:{r.seed_or(params)}" for r in requests)
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF

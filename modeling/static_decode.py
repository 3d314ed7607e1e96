"""Static-cache decoding with in-flight refill: a KV cache allocated once as ``rows x length`` per
layer, a one-token step compiled once, and slots that take the next waiting prompt as soon as their
row stops, so the batch stays full.

What transformers (5.x) offers, and what this module uses of it:

- ``StaticCache`` / ``StaticLayer``: preallocated ``[rows, kv_heads, length, head_dim]`` tensors
  marked as static addresses (what CUDA graphs need), written in place. Used: :class:`SlotLayer`
  is a ``StaticLayer`` and allocates through it. Not usable as is: the whole batch shares one
  write position (``cumulative_length``), so one row cannot restart at a new prompt while the
  others go on. :class:`SlotLayer` overrides ``update`` to write each row at its own column.
- ``CompileConfig`` + ``PreTrainedModel.get_compiled_call``: used to compile the model's forward
  for the one-token step (CUDA: ``mode="reduce-overhead"``, i.e. CUDA graphs). On the CPU the step
  runs eager unless a ``CompileConfig`` is passed (the tests trace it with ``backend="eager"``).
- ``generate(cache_implementation="static")``: not used; a static batch there runs until its
  longest row ends, and it has none of our per-row generators, budgets or ``###`` stop.
- Continuous batching (``generate_batch``, ``ContinuousBatchingManager.add_request``): not used;
  it takes prompts as token ids (``input_ids: list[int]``) only, and ours are spliced embeddings
  (the visual and audio tokens are projected features, not vocabulary entries).

What we wrote: :class:`SlotLayer` / :class:`SlotCache` (a write column per row), the step (one
token per slot; the attention mask, each row's columns ``0 .. position``, is passed in ready-made
so the compiled step has fixed shapes), and the refill loop. The prompt pass is the model's own
forward with a ``DynamicCache`` (the ``hf`` backend's call, on the rows entering slots together),
whose keys and values are then copied into the slot rows from column 0; it is never compiled (its
shape changes with every group). The per-token choice (repetition penalty, greedy or per-row
seeded sampling) and the on-device ``###`` tracking are :mod:`modeling.sampling`'s and
:mod:`modeling.hf_decode`'s, so a seeded sample draws from its own generator exactly as there, whichever slot
it lands in.

Same tokens as the ``hf`` backend, up to floating-point ties: each step attends over the whole
cache length with the unused columns masked, where the hf loop attends over exactly the tokens so
far, so the attention sums in another order. The CPU tests get identical tokens for every row; over
26k tiny-model tokens in fp32 (bench/gpu_generate.py --tiny) one row of 128 took the other of two
logits 6e-8 apart. On a GPU in bf16 the compiled step's kernels differ more; the bench counts the
rows that match.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, StaticLayer

from modeling.hf_decode import CHECK_EVERY, Decoded, Stops, find_stops, forward_kwargs, stop_tables
from modeling.sampling import GenerationConfig, pick_tokens

CACHE_TOO_LONG = "cache-too-long"  # Decoded.finish of a row whose prompt + budget exceed the cache's length


class SlotLayer(StaticLayer):
    """One layer's ``[rows, kv_heads, length, head_dim]`` keys and values; row ``i`` writes its
    next token at column ``position[i]`` (a tensor shared by all layers of the cache)."""

    def __init__(self, length: int, position: torch.Tensor):
        super().__init__(max_cache_len=length)
        self.position = position

    def allocate(self, rows: int, heads: int, head_dim: int, dtype: torch.dtype, device) -> None:
        empty = torch.empty((rows, heads, 0, head_dim), dtype=dtype, device=device)
        self.lazy_initialization(empty, empty)  # StaticLayer's: zeros, marked as static addresses

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        index = self.position.view(-1, 1, 1, 1).expand_as(key_states)  # one new token per row
        self.keys.scatter_(2, index, key_states)
        self.values.scatter_(2, index, value_states)
        return self.keys, self.values


class SlotCache(Cache):
    """A :class:`SlotLayer` per model layer, sharing one ``position`` tensor."""

    def __init__(self, layers: int, rows: int, length: int, device):
        self.position = torch.zeros(rows, dtype=torch.long, device=device)
        torch._dynamo.mark_static_address(self.position)  # changed in place between steps, never replaced
        super().__init__(layers=[SlotLayer(length, self.position) for _ in range(layers)])
        self.rows, self.length = rows, length

    def load(self, slots: torch.Tensor, prompt_cache, lengths: torch.Tensor) -> None:
        """Copy a left-padded prompt pass's keys and values (``prompt_cache``, rows ``[g, heads, T, dim]``)
        into ``slots``, each row's ``lengths[j]`` real tokens at columns ``0 .. lengths[j] - 1``."""
        width = prompt_cache.layers[0].keys.shape[2]
        shift = (width - lengths).view(-1, 1) + torch.arange(width, device=lengths.device).view(1, -1)
        for layer, src in zip(self.layers, prompt_cache.layers):
            if not layer.is_initialized:
                layer.allocate(self.rows, src.keys.shape[1], src.keys.shape[3], src.keys.dtype, src.keys.device)
            index = shift.clamp(max=width - 1).view(len(slots), 1, width, 1).expand_as(src.keys)
            layer.keys[slots, :, :width] = src.keys.gather(2, index)
            layer.values[slots, :, :width] = src.values.gather(2, index)
        self.position[slots] = lengths


class SlotState:
    """Per slot, on the device: done (an empty slot is done), why (0 length, 1 eos, 2 stop), tokens to
    keep, tokens generated, budget, trailing '#' count and, with a repetition penalty, the tokens seen.
    The host reads them only at a check (:meth:`read`)."""

    NAMES = ("length", "eos", "stop")

    def __init__(self, rows: int, device):
        zeros = lambda: torch.zeros(rows, dtype=torch.long, device=device)  # noqa: E731
        self.done = torch.ones(rows, dtype=torch.bool, device=device)
        self.why, self.keep, self.count, self.limits, self.hashes = zeros(), zeros(), zeros(), zeros(), zeros()
        self.every = torch.arange(rows, device=device)
        self.seen: torch.Tensor | None = None

    def reset(self, slots: torch.Tensor, budgets: torch.Tensor) -> None:
        """New rows in ``slots``, each with its new-token budget."""
        self.done[slots], self.why[slots], self.count[slots], self.hashes[slots] = False, 0, 0, 0
        self.limits[slots], self.keep[slots] = budgets, budgets
        if self.seen is not None:
            self.seen[slots] = False

    def advance(self, nxt: torch.Tensor, eos: torch.Tensor, tables, pad_id: int) -> torch.Tensor:
        """Record one picked token per slot (``pad_id`` where done) and which rows it ends, as
        :func:`modeling.hf_decode.decode` does; the tokens as recorded."""
        done, count = self.done, self.count
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        if self.seen is not None:
            self.seen[self.every, nxt] |= ~done
        is_eos = torch.isin(nxt, eos) & ~done
        ended = is_eos
        if tables is not None:
            stop, self.hashes = find_stops(tables, nxt, self.hashes, ~done & ~is_eos)
            self.why = torch.where(stop, 2, self.why)
            self.keep = torch.where(stop, count + 1, self.keep)  # the stop string stays in; clean_output cuts it
            ended = ended | stop
        self.why = torch.where(is_eos, 1, self.why)
        self.keep = torch.where(is_eos, count, self.keep)  # EOS itself is not output
        self.count = count + (~done).long()
        self.done = done | ended | (self.limits <= self.count)
        return nxt

    def read(self, steps: list[torch.Tensor]) -> list[tuple[list[int], tuple[str, int] | None]]:
        """Per slot (one host sync): the tokens picked in ``steps``, and (finish, tokens kept) once done."""
        state = torch.stack([self.done.long(), self.why, self.keep], dim=1)
        if steps:
            state = torch.cat([torch.stack(steps, dim=1), state], dim=1)
        return [(row[:-3], (self.NAMES[row[-2]], row[-1]) if row[-3] else None) for row in state.tolist()]


class StaticDecoder:
    """A model's slot cache (``rows x length`` tokens) and its one-token step, kept across calls.

    ``compile``: a transformers ``CompileConfig``; ``None`` compiles on CUDA (``mode="reduce-overhead"``,
    CUDA graphs) and runs eager elsewhere; ``False`` never compiles.
    """

    def __init__(self, llm, rows: int, length: int, compile=None):
        if rows < 1 or length < 2:
            raise ValueError(f"a static cache needs rows >= 1 and length >= 2, got {rows} x {length}")
        self.llm, self.rows, self.length = llm, rows, length
        self.device = llm.get_input_embeddings().weight.device
        text = (llm.get_base_model() if hasattr(llm, "get_base_model") else llm).config.get_text_config()
        kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:  # a sliding-window layer would need its own mask
            raise ValueError(f"the static backend decodes full-attention layers only; this model has {sorted(kinds)}")
        self.cache = SlotCache(text.num_hidden_layers, rows, length, self.device)
        self.cache_kw, self.extra = forward_kwargs(llm)
        self.columns = torch.arange(length, device=self.device)
        if compile is None and self.device.type == "cuda":
            from transformers import CompileConfig

            compile = CompileConfig(mode="reduce-overhead")
        self.compiled = bool(compile)
        self.steps = 0  # one-token steps of the last decode (refill shortens a mixed-length batch)
        if not compile:
            self.forward = llm
        elif hasattr(llm, "get_compiled_call"):
            self.forward = llm.get_compiled_call(compile)
        else:
            self.forward = torch.compile(llm, **compile.to_dict())

    def _prefill(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, object]:
        """The hf backend's prompt pass on left-padded rows: last-position logits and the DynamicCache."""
        position = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position, use_cache=True, **self.extra)
        cache = getattr(out, "cache", None) if self.cache_kw == "cache" else out.past_key_values
        return out.logits[:, -1, :], cache

    def _step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per slot at its ``position``; the next logits ``[rows, vocab]`` (float32)."""
        position = self.cache.position
        mask = (self.columns.view(1, -1) <= position.view(-1, 1)).view(self.rows, 1, 1, self.length)
        embeds = self.llm.get_input_embeddings()(tokens.view(-1, 1))
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        out = self.forward(inputs_embeds=embeds, attention_mask={"full_attention": mask},
                           position_ids=position.view(-1, 1).clone(), use_cache=True,
                           **{self.cache_kw: self.cache}, **self.extra)
        return out.logits[:, -1, :].to(dtype=torch.float32, copy=True)  # a CUDA graph reuses its output buffer

    @torch.no_grad()  # not inference_mode: the cache is made of ordinary tensors, as under transformers' generate
    def decode(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        stops: Stops,
        config: GenerationConfig | None = None,
        seeds: Sequence[int] | None = None,
        max_new: Sequence[int] | None = None,
        refill: bool = True,
    ) -> list[Decoded]:
        """As :func:`modeling.hf_decode.decode` (left-padded ``embeds [N,T,H]``, same stops, same tokens),
        through the slots: ``N`` may exceed ``rows``. With ``refill`` a slot takes the next waiting row
        as soon as its row stops; without, a new group of ``rows`` rows starts when the whole group is done.
        A row whose prompt + budget exceed ``length`` generates nothing (finish ``cache-too-long``).
        """
        eos_ids, pad_id, tokenizer = stops.eos_ids, stops.pad_id, stops.tokenizer
        cfg = config or GenerationConfig()
        cfg.validate()
        n = embeds.shape[0]
        if max_new is None:
            if cfg.max_new_tokens is None:
                raise ValueError("decode needs max_new (per row) or config.max_new_tokens")
            max_new = [cfg.max_new_tokens] * n
        if len(max_new) != n or min(max_new) < 1:
            raise ValueError(f"max_new must hold one budget >= 1 per row, got {list(max_new)} for {n} rows")
        dev, rows = self.device, self.rows
        embeds, mask = embeds.to(dev), attention_mask.to(dev)
        lengths = mask.sum(dim=1).tolist()
        results: list[Decoded | None] = [None] * n
        waiting: deque[int] = deque()
        for i in range(n):
            if lengths[i] + max_new[i] > self.length:
                results[i] = Decoded([], CACHE_TOO_LONG)
            else:
                waiting.append(i)
        seeds = list(seeds) if seeds is not None else [0] * n
        eos = torch.as_tensor(sorted(set(int(e) for e in eos_ids)), dtype=torch.long, device=dev)
        tables = None
        state = SlotState(rows, dev)
        gens: list[torch.Generator | None] = [None] * rows
        occupant = [-1] * rows  # the row each slot decodes, -1 when empty
        deadline = [0] * rows  # the step at which the occupant's budget runs out
        tokens: list[list[int]] = [[] for _ in range(rows)]
        steps: list[torch.Tensor] = []  # the tokens picked since the last check, [rows] each
        logits = None
        step = next_check = 0
        while True:
            if step >= next_check:
                # Harvest: one host read of the tokens since the last check and of each slot's state.
                for s, (picked, finished) in enumerate(state.read(steps)):
                    if occupant[s] >= 0:
                        tokens[s].extend(picked)
                        if finished is not None:
                            results[occupant[s]] = Decoded(tokens[s][:finished[1]], finished[0])
                            occupant[s], gens[s], tokens[s] = -1, None, []
                steps = []
                # Refill: the free slots (all of them, without refill) take the next waiting rows.
                free = [s for s in range(rows) if occupant[s] < 0]
                if not refill and len(free) < rows:
                    free = []
                take = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
                if take:
                    slots = torch.as_tensor(free[:len(take)], device=dev)
                    width = max(lengths[i] for i in take)
                    first, prompt_cache = self._prefill(embeds[take, -width:], mask[take, -width:])
                    self.cache.load(slots, prompt_cache, torch.as_tensor([lengths[i] for i in take], device=dev))
                    del prompt_cache
                    if logits is None:
                        logits = torch.zeros((rows, first.shape[-1]), dtype=torch.float32, device=dev)
                    logits[slots] = first.float()
                    state.reset(slots, torch.as_tensor([max_new[i] for i in take], device=dev))
                    for s, i in zip(free, take):
                        occupant[s], deadline[s] = i, step + max_new[i]
                        if cfg.do_sample:
                            gens[s] = torch.Generator(device=dev).manual_seed(int(seeds[i]))
                live = [deadline[s] for s in range(rows) if occupant[s] >= 0]
                if not live:
                    break
                next_check = min([(step // CHECK_EVERY + 1) * CHECK_EVERY] + live)
            if cfg.repetition_penalty != 1.0 and state.seen is None:
                state.seen = torch.zeros_like(logits, dtype=torch.bool)
            if tokenizer is not None and tables is None:
                tables = stop_tables(tokenizer, logits.shape[-1], dev)
            nxt = pick_tokens(logits, cfg, gens if cfg.do_sample else None, state.seen)
            nxt = state.advance(nxt, eos, tables, pad_id)
            steps.append(nxt)
            step += 1
            logits = self._step(nxt)
            # A live row's next token goes one column further; a done row keeps rewriting its last column.
            self.cache.position.add_((~state.done).long())
        self.steps = step
        return results  # type: ignore[return-value]


def static_decoder(llm, rows: int, length: int) -> StaticDecoder:
    """The :class:`StaticDecoder` of ``llm`` at ``rows x length``: built on first use and kept on the
    model, so a labeling actor allocates one cache and compiles one step (a new shape replaces them)."""
    dec = getattr(llm, "_static_decoder", None)
    if dec is None or (dec.rows, dec.length) != (rows, length):
        llm._static_decoder = None  # free the old cache before allocating the new one
        llm._static_decoder = dec = StaticDecoder(llm, rows, length)
    return dec

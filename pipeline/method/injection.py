"""Self-attention feature injection: one attention processor plus a small store (docs/METHOD.md, step 5).

The processor is installed with diffusers' `set_attn_processor` on the nine decoder self-attention
layers (`up_blocks.*.attentions.*.transformer_blocks.0.attn1`); every other attention keeps diffusers'
own SDPA processor. Before each UNet call the engine hands the store an `InjectionPlan` saying, for
every row of the batch, whether it attends to itself (and is recorded as an anchor) or attends to the
recorded anchor/previous-frame features (and is recorded for the next frame).

Memory: a store holds, per layer, the anchor's inputs for every (job, step, branch) and ONE rolling
slot per (job, step, branch) for "the previous frame". Frame i at step k reads slot k (frame i-1's
inputs) and then overwrites it with its own, which is all frame i+1 will need. Any schedule that keeps
the method's dependencies ((i, k) after (i-1, k)) is safe with this, so the store's size does not grow
with the video's length. Only the "random earlier frame" ablation keeps one slot per frame.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

DECODER_SELF_ATTENTION = re.compile(r"^up_blocks\.\d+\.attentions\.\d+\.transformer_blocks\.\d+\.attn1$")


def decoder_self_attention_names(unet: torch.nn.Module) -> list[str]:
    """Names of the decoder self-attention modules, in forward order (nine in SD2)."""
    return [name for name, _ in unet.named_modules() if DECODER_SELF_ATTENTION.match(name)]


def random_sources(num_frames: int, seed: int, video_id: str, prompt: str) -> list[int]:
    """The 'random' ablation: for each position in edit order, the earlier position it attends to
    (besides the anchor). Drawn from (seed, video id, prompt) alone, so a (video, prompt) gets the same
    frames whichever job, batch or machine edits it. Position 1 has only the anchor before it."""
    rng = random.Random(f"{seed}\x00{video_id}\x00{prompt}")  # str seeds hash with SHA-512: stable
    return [0] + [rng.randrange(i) for i in range(1, num_frames)]


@dataclass
class InjectionPlan:
    """What the decoder self-attention layers do with the rows of one UNet call.

    Rows `[0, n_plain)` use ordinary self-attention; the rest attend to stored features. Index
    tensors address flattened store rows (see `FeatureStore.anchor_index` / `prev_index`); None means
    "don't": e.g. `read_anchor=None` for the previous-frame-only ablation.
    """

    n_plain: int
    record_anchor: torch.Tensor | None = None  # [n_plain] anchor rows to record the plain rows into
    record_prev_plain: torch.Tensor | None = None  # [n_plain] prev slots the plain rows also fill
    read_anchor: torch.Tensor | None = None  # [n_inject]
    read_prev: torch.Tensor | None = None  # [n_inject]
    write_prev: torch.Tensor | None = None  # [n_inject]

    @property
    def rows(self) -> int:
        """The batch rows this plan is for. A compiled UNet pads its batch to a static size
        (`pipeline.models.speed`): rows past these are padding, never recorded or read."""
        injected = (self.read_anchor, self.read_prev, self.write_prev)
        return self.n_plain + next((len(index) for index in injected if index is not None), 0)


class FeatureStore:
    """Recorded decoder self-attention inputs, allocated on first use in the model's dtype/device."""

    def __init__(self) -> None:
        self.reset(num_jobs=0, steps=0, branches=0)

    def reset(self, num_jobs: int, steps: int, branches: int, prev_slots: int = 1) -> None:
        """Drop all recorded features and size the store for a new set of jobs."""
        self.num_jobs, self.steps, self.branches, self.prev_slots = num_jobs, steps, branches, prev_slots
        self.anchor: dict[int, torch.Tensor] = {}
        self.prev: dict[int, torch.Tensor] = {}
        self.plan: InjectionPlan | None = None

    def anchor_index(self, job: int, step: int, branch: int) -> int:
        return (job * self.steps + step) * self.branches + branch

    def prev_index(self, job: int, slot: int, step: int, branch: int) -> int:
        return ((job * self.prev_slots + slot) * self.steps + step) * self.branches + branch

    def _buffer(self, table: dict[int, torch.Tensor], layer: int, rows: int, like: torch.Tensor) -> torch.Tensor:
        buf = table.get(layer)
        if buf is None:
            buf = table[layer] = torch.empty((rows, *like.shape[1:]), dtype=like.dtype, device=like.device)
        return buf

    def anchor_buffer(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        return self._buffer(self.anchor, layer, self.num_jobs * self.steps * self.branches, like)

    def prev_buffer(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        rows = self.num_jobs * self.prev_slots * self.steps * self.branches
        return self._buffer(self.prev, layer, rows, like)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.anchor.values(), *self.prev.values()])


def attend(attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """`attn`'s own projections and SDPA, queries from `hidden_states`, keys/values from `context`.

    The same arithmetic as diffusers' AttnProcessor2_0 for a 3-D self-attention input, so a row that
    attends to its own features gets exactly what the ordinary processor gives.
    """
    batch = hidden_states.shape[0]
    query = attn.to_q(hidden_states)
    key = attn.to_k(context)
    value = attn.to_v(context)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    out = attn.to_out[0](out)
    return attn.to_out[1](out)


class InjectionProcessor:
    """Attention processor for one decoder self-attention layer; does what the store's plan says."""

    def __init__(self, store: FeatureStore, layer: int) -> None:
        self.store = store
        self.layer = layer

    # Under torch.compile (pipeline/models/speed.py) the graph breaks here and this runs eagerly: the
    # plan and the store are Python state that changes with every call (traced, each batch layout would
    # be a recompile, and the store's in-place writes would keep CUDA graphs off). The attention itself
    # is the same SDPA kernel either way.
    @torch.compiler.disable
    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        plan = self.store.plan
        if plan is None:
            return attend(attn, hidden_states, hidden_states)
        h = hidden_states[: plan.rows]
        n = plan.n_plain
        outputs = []
        if n > 0:
            plain = h[:n]
            if plan.record_anchor is not None:
                self.store.anchor_buffer(self.layer, plain).index_copy_(0, plan.record_anchor, plain)
            if plan.record_prev_plain is not None:
                self.store.prev_buffer(self.layer, plain).index_copy_(0, plan.record_prev_plain, plain)
            outputs.append(attend(attn, plain, plain))
        if n < h.shape[0]:
            current = h[n:]
            sources = []
            # index_select copies, so the previous frame's features are read before they are
            # overwritten by the current frame's below.
            if plan.read_anchor is not None:
                sources.append(self.store.anchor[self.layer].index_select(0, plan.read_anchor))
            if plan.read_prev is not None:
                sources.append(self.store.prev[self.layer].index_select(0, plan.read_prev))
            context = sources[0] if len(sources) == 1 else torch.cat(sources, dim=1)
            if plan.write_prev is not None:
                self.store.prev_buffer(self.layer, current).index_copy_(0, plan.write_prev, current)
            outputs.append(attend(attn, current, context))
        if h.shape[0] < hidden_states.shape[0]:  # padding rows: attend to nothing (the residual passes)
            outputs.append(torch.zeros_like(hidden_states[h.shape[0] :]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)


def install(unet: torch.nn.Module, store: FeatureStore) -> list[str]:
    """Put injection processors on the decoder self-attention layers, SDPA everywhere else.

    Returns the names of the injected layers. With no plan set on the store the UNet computes
    exactly what it computed before.
    """
    names = decoder_self_attention_names(unet)
    layer_of = {name: i for i, name in enumerate(names)}
    modules = dict(unet.named_modules())
    for name in names:
        attn = modules[name]
        # `attend` covers plain 3-D self-attention only; SD2's attn1 layers are exactly that.
        if attn.group_norm is not None or attn.spatial_norm is not None or attn.residual_connection:
            raise ValueError(f"{name}: unsupported attention variant for feature injection")
    processors = {}
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        processors[key] = InjectionProcessor(store, layer_of[name]) if name in layer_of else AttnProcessor2_0()
    unet.set_attn_processor(processors)
    return names

"""The conditioning stage: the request's prompt and negative prompt turned into what the pipeline
takes, as a schedule over the steps.

A `PromptSchedule` says which prompt and negative prompt hold from which step on: one entry for a
plain request; several for the prompt language's editing (`[cat:dog:0.5]`) and alternation
(`[cat|dog]`, prompt_parser.py), read as AUTOMATIC1111 does for the steps the call really runs
(`schedule_for`); add-ons may edit `call.conditioning` before the call. `encode()` then replaces the call's
`prompt`/`negative_prompt` with embeddings and returns a `StepSwap` that hands the pipeline the next
entry's embeddings at its first step, through the step callback, for every sampler (a diffusers
scheduler or one of Kiri's function samplers alike).

- SD 1.x / 2.x and SDXL (AnimateDiff's clips over them too) are encoded here, as AUTOMATIC1111 does: a prompt past 75 tokens is read in
  chunks of 75, each encoded on its own (BOS + 75 + EOS) and the chunks concatenated, so nothing
  is cut at 77; BREAK starts a new chunk; the positive and negative sides are padded with empty
  chunks to the same length. Weights (`(red:1.3)`, `[red]`) scale each token's hidden state and the
  chunk's mean is then restored (A1111's "original" emphasis), on each encoder; a text whose
  weights are all 1 is encoded exactly as without any syntax.
  Clip skip (A1111's count: 1 = the last layer) picks the encoder layer. SDXL reads both encoders
  (the second's penultimate layer, its pooled output from the first chunk).
- SD3, Flux and PixArt encode through their pipeline's own `encode_prompt` (T5 reads long prompts
  itself); with one schedule entry the pipeline is handed the text, exactly as before. Their
  encoders read no weights: the text goes without the weight syntax (the runner warns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.prompt_parser import BREAK_MARK, PromptTree, parse_prompt_attention, plain_text, steps_of

CHUNK = 75  # tokens per chunk, without BOS/EOS, as AUTOMATIC1111 counts (the text encoder's 77 less two)


def _chunk_size(tokenizer: Any) -> int:
    """Tokens per chunk: the tokenizer's window less BOS and EOS (75 for every released CLIP)."""
    window = getattr(tokenizer, "model_max_length", CHUNK + 2)
    return max(1, min(CHUNK + 2, int(window)) - 2) if isinstance(window, int) and window > 2 else CHUNK


@dataclass(frozen=True)
class ScheduleEntry:
    start: int  # the first step (0-based) this prompt holds for
    prompt: str
    negative: str


@dataclass
class PromptSchedule:
    entries: list[ScheduleEntry]
    clip_skip: int = 1  # AUTOMATIC1111's count: 1 = the last layer

    @classmethod
    def single(cls, prompt: str, negative: str) -> "PromptSchedule":
        return cls([ScheduleEntry(0, prompt or "", negative or "")])

    def with_entries(self, entries: list[ScheduleEntry]) -> "PromptSchedule":
        return replace(self, entries=sorted(entries, key=lambda e: e.start))

    @classmethod
    def parse(cls, prompt: str, negative: str, steps: int | Callable[[], int],
              first_pass_steps: int | None = None) -> "PromptSchedule":
        """The prompt and negative prompt read for editing and alternation over `steps` denoising steps
        (a function: asked only when either text changes during the steps). Each side has its own
        schedule; an entry starts wherever either side changes. `first_pass_steps`: these steps are a
        hires fix's second pass after a first pass of that many (A1111: a step number counts on from
        the first pass, a fraction from 1.0 on, so [a:b:0.5] is b for the whole second pass)."""
        trees = PromptTree(prompt or ""), PromptTree(negative or "")
        if not any(tree.dynamic for tree in trees):
            return cls.single(prompt, negative)
        total = max(1, int(steps() if callable(steps) else steps))
        if first_pass_steps:
            sides = [steps_of(tree.schedule(first_pass_steps, hires_steps=total), total) for tree in trees]
        else:
            sides = [steps_of(tree.schedule(total), total) for tree in trees]
        starts = sorted({start for side in sides for start, _ in side})
        return cls([ScheduleEntry(start, _text_at(sides[0], start), _text_at(sides[1], start)) for start in starts])


def _text_at(side: list[tuple[int, str]], step: int) -> str:
    return [text for start, text in side if start <= step][-1]


def schedule_for(call: Any) -> PromptSchedule:
    """The call's prompt schedule, for the denoising steps it runs (`steps_run`)."""
    return PromptSchedule.parse(call.kwargs["prompt"], call.kwargs.get("negative_prompt") or "", lambda: steps_run(call),
                                getattr(call, "first_pass_steps", None))


def steps_run(call: Any) -> int:
    """How many steps the call's denoising loop makes, which is what its step callback counts: the
    scheduler's timesteps for num_inference_steps (two model calls a step for second-order samplers,
    as A1111 counts them), less those an init image skips (img2img's strength, as diffusers' pipelines
    cut them)."""
    steps = call.kwargs.get("num_inference_steps")
    if not isinstance(steps, int) or steps < 1:
        return 1
    scheduler = call.components.get("scheduler") or getattr(call.pipeline, "scheduler", None)
    order = int(getattr(scheduler, "order", 1) or 1)
    loop = steps
    try:  # the pipeline sets the timesteps again itself before its loop
        scheduler.set_timesteps(steps, device="cpu")
        loop = len(scheduler.timesteps) or steps
    except Exception:  # noqa: BLE001 - a scheduler that needs the pipeline's own arguments (Flux's mu): one a step
        loop = steps * order
    strength = call.kwargs.get("strength")
    if isinstance(strength, (int, float)) and call.accepts("strength"):
        if _is_flux(call.pipeline):  # FluxImg2ImgPipeline.get_timesteps keeps the fraction
            skipped = int(max(steps - steps * strength, 0))
        else:
            skipped = max(steps - min(int(steps * strength), steps), 0)
        loop -= skipped * order
    return max(1, loop)


def chunked_families(pipeline: Any) -> bool:
    """Whether Kiri encodes this pipeline's prompts itself: the CLIP-only Stable Diffusion pipelines
    (SD 1.x/2.x and SDXL, for every task, and AnimateDiff's over them), not SD3, Flux or PixArt."""
    name = type(pipeline).__name__
    return (name.startswith(("StableDiffusion", "AnimateDiff")) and not name.startswith("StableDiffusion3")
            and getattr(pipeline, "text_encoder", None) is not None and getattr(pipeline, "tokenizer", None) is not None)


def _is_flux(pipeline: Any) -> bool:
    return type(pipeline).__name__.startswith("Flux")


def _is_sdxl(pipeline: Any) -> bool:
    return getattr(pipeline, "text_encoder_2", None) is not None and not _is_flux(pipeline)


@dataclass
class StepSwap:
    """Hands the pipeline the next schedule entry's embeddings at its first step."""

    starts: list[int]  # the steps at which a new entry begins (after the first)
    tensors: list[dict[str, Any]]  # for each of those: name -> (negative, positive) or positive tensor
    tensor_inputs: list[str] = field(default_factory=list)

    def on_step(self, step: int, tensors: dict[str, Any], cfg: bool) -> dict[str, Any]:
        """After step `step` (0-based) the next step is step + 1: swap in the entry starting there."""
        import torch

        nxt = step + 1
        if nxt not in self.starts:
            return {}
        out = {}
        for name, value in self.tensors[self.starts.index(nxt)].items():
            current = tensors[name]
            if isinstance(value, tuple):
                negative, positive = value
                parts = (negative, positive) if cfg else (positive,)
                batch = current.shape[0] // len(parts)
                out[name] = torch.cat([p.repeat(batch, *([1] * (p.dim() - 1))) for p in parts]).to(current.device, current.dtype)
            else:
                batch = current.shape[0] // value.shape[0]
                out[name] = value.repeat(batch, *([1] * (value.dim() - 1))).to(current.device, current.dtype)
        return out


def encode(call: Any) -> StepSwap | None:
    """Replace the call's prompt text with embeddings of its schedule (call.conditioning); returns the
    step swap for a schedule of several entries, None for one."""
    schedule: PromptSchedule | None = getattr(call, "conditioning", None)
    if schedule is None:
        return None
    pipeline = call.pipeline
    if chunked_families(pipeline):
        return _encode_clip(call, schedule)
    schedule = schedule.with_entries([replace(e, prompt=plain_text(e.prompt)[0], negative=plain_text(e.negative)[0])
                                      for e in schedule.entries])
    if len(schedule.entries) == 1:
        entry = schedule.entries[0]
        call.kwargs["prompt"], call.kwargs["negative_prompt"] = entry.prompt, entry.negative or None
        if schedule.clip_skip > 1:
            if not call.accepts("clip_skip"):
                raise InvalidRequest("clip_skip", f"this model's pipeline ({type(pipeline).__name__}) has no clip skip")
            call.kwargs["clip_skip"] = schedule.clip_skip - 1
        return None
    return _encode_own(call, schedule)


# --- SD 1.x / 2.x / SDXL: A1111's chunks -------------------------------------------------------------

def _encode_clip(call: Any, schedule: PromptSchedule) -> StepSwap | None:
    pipeline = call.pipeline
    sdxl = _is_sdxl(pipeline)
    texts = [t for e in schedule.entries for t in (e.prompt, e.negative)]
    tokenizers = [pipeline.tokenizer] + ([pipeline.tokenizer_2] if sdxl else [])
    chunks = max(_chunk_count(tokenizer, t, pipeline) for t in texts for tokenizer in tokenizers)
    encoded = [(_clip_embeds(pipeline, e.prompt, chunks, schedule.clip_skip, sdxl),
                _clip_embeds(pipeline, e.negative, chunks, schedule.clip_skip, sdxl, negative=True))
               for e in schedule.entries]
    call.kwargs.pop("prompt", None)
    call.kwargs.pop("negative_prompt", None)
    (positive, pooled), (negative, negative_pooled) = encoded[0]
    call.kwargs["prompt_embeds"], call.kwargs["negative_prompt_embeds"] = positive, negative
    if sdxl:
        call.kwargs["pooled_prompt_embeds"], call.kwargs["negative_pooled_prompt_embeds"] = pooled, negative_pooled
    if len(encoded) == 1:
        return None
    tensors = []
    for (pos, pos_pooled), (neg, neg_pooled) in encoded[1:]:
        entry = {"prompt_embeds": (neg, pos)}
        if sdxl:
            entry["add_text_embeds"] = (neg_pooled, pos_pooled)
        tensors.append(entry)
    names = ["prompt_embeds"] + (["add_text_embeds"] if sdxl else [])
    return StepSwap([e.start for e in schedule.entries[1:]], tensors, names)


def tokenize(pipeline: Any, tokenizer: Any, text: str) -> list[int]:
    """The one place prompt text becomes token ids for Kiri's own encoding and counting: without BOS,
    EOS or a cut. A textual inversion's name reaches here already written as all its tokens (the
    embeddings add-on's apply()); diffusers' maybe_convert_prompt is not called, since it replaces
    substrings and would expand those tokens a second time."""
    return tokenizer(text or "", truncation=False, add_special_tokens=False)["input_ids"]


@dataclass
class Chunks:
    """One text in A1111's chunks: each chunk's token ids (at most 75, without BOS/EOS) and weights."""

    ids: list[list[int]]
    weights: list[list[float]]
    tokens: int  # as A1111's counter: 75 for each chunk a later one follows, the last one's own


def chunk_text(pipeline: Any, tokenizer: Any, text: str) -> Chunks:
    """A1111's sd_hijack_clip tokenize_line: each weighted fragment tokenized, tokens packed into
    chunks of 75, BREAK closing the chunk (padded) and starting the next (comma backtrack: not done)."""
    size = _chunk_size(tokenizer)
    out = Chunks([], [], 0)
    ids: list[int] = []
    weights: list[float] = []

    def close(last: bool = False) -> None:
        nonlocal ids, weights
        out.tokens += len(ids) if last else size
        out.ids.append(ids)
        out.weights.append(weights)
        ids, weights = [], []

    for fragment in parse_prompt_attention(text or ""):
        if fragment == BREAK_MARK:
            close()
            continue
        piece, weight = fragment
        for token in tokenize(pipeline, tokenizer, piece) if piece else ():
            if len(ids) == size:
                close()
            ids.append(token)
            weights.append(weight)
    if ids or not out.ids:
        close(last=True)
    return out


def _chunk_count(tokenizer: Any, text: str, pipeline: Any = None) -> int:
    return len(chunk_text(pipeline, tokenizer, text).ids)


def _chunk_rows(pipeline: Any, tokenizer: Any, text: str, chunks: int) -> list[tuple[list[int], list[float]]]:
    """(BOS + tokens + EOS, padded with the tokenizer's pad token; their weights) per chunk, empty chunks to fill."""
    layout = chunk_text(pipeline, tokenizer, text)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    length = _chunk_size(tokenizer) + 2
    rows = []
    for index in range(chunks):
        part = layout.ids[index] if index < len(layout.ids) else []
        weights = layout.weights[index] if index < len(layout.weights) else []
        row = [bos, *part, eos]
        rows.append((row + [pad] * (length - len(row)), [1.0, *weights] + [1.0] * (length - 1 - len(weights))))
    return rows


def _emphasis(hidden: Any, weights: list[float]) -> Any:
    """A1111's "original" emphasis: each token's hidden state times its weight, then the chunk's mean
    restored. All weights 1: the hidden states untouched."""
    import torch

    if all(w == 1.0 for w in weights):
        return hidden
    multipliers = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device).reshape(1, -1, 1)
    original = hidden.mean()
    hidden = hidden * multipliers
    new = hidden.mean()
    # Means that are no more than rounding noise (a layer norm without bias, as in tiny test models)
    # says nothing to restore: dividing by it would blow the states up.
    noise = 1e-6 * float(hidden.abs().mean())
    if min(abs(float(original)), abs(float(new))) <= noise or not bool(torch.isfinite(original / new)):
        return hidden
    return hidden * (original / new)


def _clip_embeds(pipeline: Any, text: str, chunks: int, clip_skip: int, sdxl: bool, negative: bool = False):
    """(embeds (1, 77 * chunks, dim), pooled or None) for one text, as diffusers' encode_prompt does
    per chunk (SD: the last layer, or the n-th last through the final layer norm for clip skip;
    SDXL: both encoders' penultimate layers side by side, the second's pooled output)."""
    import torch

    if sdxl and negative and not text and getattr(pipeline.config, "force_zeros_for_empty_prompt", False):
        positive, pooled = _clip_embeds(pipeline, "", chunks, clip_skip, sdxl)
        return torch.zeros_like(positive), torch.zeros_like(pooled)
    device = pipeline._execution_device
    pairs = [(pipeline.tokenizer, pipeline.text_encoder)]
    if sdxl:
        pairs.append((pipeline.tokenizer_2, pipeline.text_encoder_2))
    per_encoder, pooled = [], None
    with torch.inference_mode():
        for tokenizer, encoder in pairs:
            rows = []
            for index, (ids, weights) in enumerate(_chunk_rows(pipeline, tokenizer, text, chunks)):
                tensor = torch.tensor([ids], device=device)
                mask = torch.ones_like(tensor) if getattr(encoder.config, "use_attention_mask", False) else None
                output = encoder(tensor, attention_mask=mask, output_hidden_states=True)
                if sdxl:
                    hidden = output.hidden_states[-(clip_skip + 1)]
                    if encoder is pairs[-1][1] and index == 0:
                        pooled = output[0]
                elif clip_skip == 1:
                    hidden = output[0]
                else:
                    norm = getattr(getattr(encoder, "text_model", encoder), "final_layer_norm")
                    hidden = norm(output.hidden_states[-clip_skip])
                rows.append(_emphasis(hidden, weights))
            per_encoder.append(torch.cat(rows, dim=1))
    embeds = torch.cat(per_encoder, dim=-1) if sdxl else per_encoder[0]
    dtype = (pipeline.text_encoder_2 if sdxl else pipeline.text_encoder).dtype
    return embeds.to(device=device, dtype=dtype), (pooled.to(device=device, dtype=dtype) if pooled is not None else None)


# --- SD3 / Flux / PixArt: the pipeline's own encoder, for a schedule --------------------------------

def _encode_own(call: Any, schedule: PromptSchedule) -> StepSwap:
    import torch

    pipeline = call.pipeline
    name = type(pipeline).__name__
    cfg = call.kwargs.get("guidance_scale", 1.0) > 1.0
    encoded = []
    with torch.inference_mode():
        for entry in schedule.entries:
            if name.startswith("StableDiffusion3"):
                skip = {"clip_skip": schedule.clip_skip - 1} if schedule.clip_skip > 1 else {}
                pe, npe, ppe, nppe = pipeline.encode_prompt(entry.prompt, None, None, do_classifier_free_guidance=cfg,
                                                            negative_prompt=entry.negative or "", **skip)
                encoded.append({"prompt_embeds": (npe, pe), "pooled_prompt_embeds": (nppe, ppe)} if cfg
                               else {"prompt_embeds": pe, "pooled_prompt_embeds": ppe})
            elif _is_flux(pipeline):
                pe, ppe, _ = pipeline.encode_prompt(entry.prompt, None)
                encoded.append({"prompt_embeds": pe, "pooled_prompt_embeds": ppe})
            else:
                raise InvalidRequest("prompt", f"{name} cannot change its prompt during the steps (its pipeline has no "
                                               "step callback for it)")
    first = encoded[0]
    call.kwargs.pop("prompt", None)
    call.kwargs.pop("negative_prompt", None)
    for key, value in first.items():
        if isinstance(value, tuple):
            call.kwargs["negative_" + key], call.kwargs[key] = value
        else:
            call.kwargs[key] = value
    swap_names = [n for n in ("prompt_embeds", "pooled_prompt_embeds") if n in getattr(pipeline, "_callback_tensor_inputs", [])]
    tensors = [{k: v for k, v in e.items() if k in swap_names} for e in encoded[1:]]
    return StepSwap([e.start for e in schedule.entries[1:]], tensors, swap_names)


# --- the prompt box's token counter ------------------------------------------------------------------

def token_counts(tokenizer: Any, text: str, pipeline: Any = None, chunked: bool = True, steps: int = 20) -> tuple[int, int]:
    """AUTOMATIC1111's counter beside the prompt box: (tokens, what the chunks hold) for the longest
    text the prompt's schedule gives (edits and alternation read over `steps`), e.g. (12, 75), or
    (80, 150) for two chunks; a BREAK counts its chunk as full. Not chunked (SD3, PixArt, Flux): the
    text without weight syntax, against the tokenizer's window less BOS and EOS."""
    texts = dict.fromkeys(t for _, t in PromptTree(text or "").schedule(steps))
    if chunked:
        size = _chunk_size(tokenizer)
        tokens = max(chunk_text(pipeline, tokenizer, t).tokens for t in texts)
        return tokens, -(-max(tokens, 1) // size) * size
    tokens = max(len(tokenize(pipeline, tokenizer, plain_text(t)[0])) for t in texts)
    window = getattr(tokenizer, "model_max_length", CHUNK + 2)
    return tokens, (window - 2 if isinstance(window, int) and 2 < window < 100_000 else tokens)

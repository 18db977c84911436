"""The add-on seam: what a request names in `addons` to change how a model denoises (clip skip
today; VAE, LoRA, ControlNet, IP-Adapter, prompt editing and step caching next), built-ins and
extensions alike, each in a folder of its own.

An add-on has four lifetimes, each optional (ComfyUI's ModelPatcher, InvokeAI's extensions and
diffusers' hooks, in Kiri's terms):

    per model  state_key() / load_state(ctx, model) / use_state(state)
               loaded once for a loaded model and kept as derived state of it (LoadedModel.derived),
               dropped when the model is evicted; its tensors count in the memory budget. The next
               job with the same key gets it back without a load. use_state hands it (loaded or kept)
               to the add-on before each batch's apply, for the model of that batch.
    per job    job(ctx, model, request): a context manager entered before the first batch and exited
               after the last, on failure, on Interrupt and when the job is dropped; a failure while
               entering exits what was entered. It must leave the shared model as it found it: other
               users' turns run between batches (that is what per call is for).
    per call   apply(call) / release(call) around each pipeline call; release runs in reverse order,
               also when the call fails, and for an add-on whose own apply() raised (so it must cope with
               a half-done apply). A kwarg an add-on sets that the pipeline does not take is an
               error naming the add-on, never dropped.
    per step   on_step(step) for every denoising step, with the tensors named in `tensor_inputs`
               (e.g. "prompt_embeds" to swap the conditioning from step k on); it may return
               replacements. Every add-on's step callback composes with the runner's own.

`pipeline_components(ctx, model)` hands the resolver modules the pipeline must take (a ControlNet):
the runner then calls the family's pipeline for the task that takes them, built from the loaded
components, not copies (generation/pipelines.py).

Add-ons register by name in an `AddonRegistry` (bootstrap for built-ins, `kiri.add_addon` for
extensions); a request names the ones it wants in `request.addons` ({name: settings}).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.prompt_tags import PromptTag, split_tags

log = logging.getLogger(__name__)

__all__ = ["Addon", "AddonContext", "AddonFactory", "AddonRegistry", "AddonSession", "AddonSpec", "StepState", "derived_bytes", "label_of"]


@dataclass
class AddonContext:
    """The services an add-on may use: the catalog, the model manager (loaders, cache, memory
    budget), the device, the settings, and the job it runs for."""

    catalog: Any
    models: Any
    device: str
    settings: Any
    job: Any = None


@dataclass
class StepState:
    """One denoising step, as an add-on's `on_step` sees it."""

    step: int  # 0-based index of the step just done
    steps: int  # steps in this call (the pipeline's count), 0 if it does not say
    timestep: Any
    tensors: dict[str, Any]  # the tensors the add-ons asked for, by name (plus latents)
    pipeline: Any = None


class Addon:
    """A base with nothing to do in every lifetime: an add-on overrides what it needs. Objects that
    do not inherit from it work too (duck typing), including the older prepare/apply/release shape."""

    name: str = ""
    tensor_inputs: tuple[str, ...] = ()  # tensors on_step reads or replaces

    # per model
    def state_key(self) -> Hashable | None:
        return None  # None: no per-model state

    def load_state(self, ctx: AddonContext, model: Any) -> Any:
        return None

    def use_state(self, state: Any) -> None:
        """This batch's per-model state (what load_state returned, now or for an earlier job)."""

    # when built
    def check(self, catalog: Any) -> None:
        """Refusals that need the catalog (an unknown LoRA name), made when the add-ons are built, so a
        request is refused before its job is queued (AddonRegistry.catalog)."""

    # per job
    def prepare(self, model: Any, request: Any) -> None:
        """The older per-job hook: checks and reads before the first batch (job() calls it)."""

    @contextmanager
    def job(self, ctx: AddonContext, model: Any, request: Any) -> Iterator[None]:
        self.prepare(model, request)
        yield

    # per call
    def pipeline_components(self, ctx: AddonContext, model: Any) -> dict[str, Any]:
        return {}

    def apply(self, call: Any) -> None:
        pass

    def release(self, call: Any) -> None:
        pass

    # per step
    def on_step(self, step: StepState) -> dict[str, Any] | None:
        return None

    def infotext(self) -> dict[str, object]:
        return {}

    def sources(self) -> dict[str, Any]:
        """The pictures this add-on starts from (a ControlNet unit's control picture), keyed by the infotext
        key that records each one's hash: kept beside the saved outputs (runner.kept_sources), so the
        Library can make the picture again (AddonSpec.from_infotext reads them back)."""
        return {}


# An add-on factory: (settings from request.addons[name]) -> Addon, or None when the settings ask for nothing.
AddonFactory = Callable[[Any], Any]


@dataclass(frozen=True)
class AddonSpec:
    name: str
    factory: AddonFactory
    infotext_keys: tuple[str, ...] = ()  # infotext keys it writes, so PNG info can send them back
    source: str = "built-in"
    # settings -> the add-on's settings when a request names none (a Settings default), or None
    default: Callable[[Any], Any] | None = None
    # extra-network kinds this add-on reads from the prompt (`<lora:name:0.8>`: ("lora", "lyco"))
    prompt_tags: tuple[str, ...] = ()
    # (the request's settings for it or None, the prompt's tags of those kinds) -> its settings for the job.
    # Called when the add-ons are built, never stored back: building twice gives the same add-ons.
    from_tags: Callable[[Any, list[Any]], Any] | None = None
    # A1111 alwayson_scripts this add-on reads on /sdapi/v1 (by title, any case: "controlnet"); several
    # add-ons may read one script (ControlNet and IP-Adapter units both come in "controlnet").
    api_scripts: tuple[str, ...] = ()
    # (the script's title as registered, its args as sent) -> the add-on's settings, or None when the
    # args ask nothing of this add-on. Images stay as sent (base64): the factory decodes them.
    from_api_script: Callable[[str, Any], Any] | None = None
    # (a saved picture's infotext params, kept) -> {script title: {"args": [...]}} for the /sdapi/v1 body that
    # makes the picture again (the Library's Reproduce), or None when the picture did not use this add-on.
    # kept(key): the kept picture an infotext key records (its `sources()`) as base64, None where the
    # infotext records none; raises SourceGone where one was recorded but is no longer kept.
    from_infotext: Callable[[dict[str, str], Callable[[str], str | None]], dict[str, Any] | None] | None = None


class SourceGone(LookupError):
    """A picture the infotext records (by its hash) is no longer among the kept ones."""

    def __init__(self, key: str, digest: str, where: str) -> None:
        super().__init__(f"{key} {digest[:16]} is no longer in {where}")
        self.key, self.digest, self.where = key, digest, where


class AddonRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, AddonSpec] = {}
        self.catalog: Any = None  # the Engine's: what build() hands each add-on's check()

    def register(self, spec: AddonSpec, override: bool = False) -> None:
        if spec.name in self._specs and not override:
            raise ValueError(f"an add-on named {spec.name!r} is already registered by {self._specs[spec.name].source}")
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> AddonSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise InvalidRequest("addons", f"unknown add-on {name!r}; available: {', '.join(self._specs) or '(none)'}") from None

    def with_defaults(self, wanted: dict[str, Any], settings: Any) -> dict[str, Any]:
        """`wanted` plus the add-ons whose defaults the settings turn on, for those it does not name."""
        if not isinstance(wanted, dict):
            return wanted  # build() refuses it, naming the field
        out = dict(wanted)
        for name, spec in self._specs.items():
            if name not in out and spec.default is not None:
                value = spec.default(settings)
                if value:
                    out[name] = value
        return out

    def tag_kinds(self) -> dict[str, str]:
        """Extra-network kind -> the add-on that reads it."""
        return {kind: name for name, spec in self._specs.items() for kind in spec.prompt_tags}

    def unknown_tags(self, *texts: str | None) -> list[str]:
        """The prompt tags whose kind no add-on reads (`<foo:x>`), as written."""
        kinds = self.tag_kinds()
        return [tag.text for text in texts for tag in split_tags(text)[1] if tag.kind not in kinds]

    def with_prompt_tags(self, wanted: dict[str, Any], prompt: str | None, negative: str | None = None) -> dict[str, Any]:
        """`wanted` with the add-ons the prompts' tags name (`<lora:...>` names "lora"), each given its
        settings through its spec's from_tags (the request's own settings for it merged with the tags)."""
        if not isinstance(wanted, dict):
            return wanted  # build() refuses it, naming the field
        found: dict[str, list[PromptTag]] = {}
        kinds = self.tag_kinds()
        tags = split_tags(prompt)[1] + split_tags(negative, negative=True)[1]
        for tag in tags:
            if tag.kind in kinds:
                found.setdefault(kinds[tag.kind], []).append(tag)
        if not found:
            return wanted
        out = dict(wanted)
        for name, tags in found.items():
            spec = self._specs[name]
            out[name] = spec.from_tags(wanted.get(name), tags) if spec.from_tags is not None else wanted.get(name, True)
        return out

    def from_api_scripts(self, scripts: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A1111's `alwayson_scripts` ({title: {"args": [...]}}) -> (the add-ons' settings they ask for,
        the titles no add-on reads, as sent). A script's settings come through each reading spec's
        from_api_script; one that raises InvalidRequest names the field it checked."""
        found: dict[str, Any] = {}
        unread: list[str] = []
        for title, value in (scripts or {}).items():
            args = value.get("args", []) if isinstance(value, dict) else value
            readers = [spec for spec in self._specs.values()
                       if str(title).lower() in {s.lower() for s in spec.api_scripts} and spec.from_api_script is not None]
            if not readers:
                unread.append(title)
            for spec in readers:
                settings = spec.from_api_script(str(title).lower(), args)
                if settings is not None:
                    found[spec.name] = settings
        return found, unread

    def reproduce_scripts(self, params: dict[str, str], kept: Callable[[str], str | None]) -> dict[str, Any]:
        """The alwayson_scripts that make a saved picture's add-on work again, from its infotext `params`
        (each spec's from_infotext; `kept` as it describes)."""
        scripts: dict[str, Any] = {}
        for spec in self._specs.values():
            if spec.from_infotext is not None:
                scripts.update(spec.from_infotext(params, kept) or {})
        return scripts

    def build(self, wanted: dict[str, Any], prompt: str | None = None, negative: str | None = None) -> list[Any]:
        """The add-ons a request asks for, in registration order (so their effects compose the same way),
        with those its prompt's tags name (`prompt`, `negative`: the texts as written)."""
        if not isinstance(wanted, dict):
            raise InvalidRequest("addons", "addons must be an object of {name: settings}")
        wanted = self.with_prompt_tags(wanted, prompt, negative)
        for name in wanted:
            self.get(name)
        addons = []
        for name, spec in self._specs.items():
            if name in wanted:
                addon = spec.factory(wanted[name])
                if addon is not None:
                    addons.append(addon)
        if self.catalog is not None:
            for addon in addons:
                check = getattr(addon, "check", None)
                if check is not None:
                    check(self.catalog)
        return addons


def label_of(addon: Any) -> str:
    """An add-on's name, as refusals name it."""
    return getattr(addon, "name", "") or type(addon).__name__


_label = label_of


def state_bytes(value: Any) -> int:
    """Bytes of the tensors in an add-on's per-model state (tensors, modules, dicts and lists of them)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, torch.nn.Module):
        return sum(t.numel() * t.element_size() for t in [*value.parameters(), *value.buffers()])
    if isinstance(value, dict):
        return sum(state_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(state_bytes(v) for v in value)
    return 0


class AddonSession:
    """The add-ons of one job, through their lifetimes; the runner drives it:

        with ExitStack() as stack:
            session.enter(model, request, stack)          # per job
            for each batch:
                session.state(model)                      # per model (cached on the model)
                applied = session.apply(call)             # per call
                ... call.run() with session.on_step in the step callback ...
                session.release(call, applied)
    """

    DERIVED = "addon-state"

    def __init__(self, addons: list[Any], ctx: AddonContext):
        self.addons, self.ctx = list(addons), ctx

    # per job
    def enter(self, model: Any, request: Any, stack: ExitStack) -> None:
        for addon in self.addons:
            job = getattr(addon, "job", None)
            if job is not None:
                stack.enter_context(job(self.ctx, model, request))
            elif hasattr(addon, "prepare"):
                addon.prepare(model, request)

    # per model
    def state(self, model: Any) -> dict[str, Any]:
        """Each add-on's per-model state for `model`, loaded the first time and kept on the model."""
        states: dict[str, Any] = {}
        derived = getattr(model, "derived", None)
        for addon in self.addons:
            key = addon.state_key() if hasattr(addon, "state_key") else None
            if key is None:
                continue
            slot = (self.DERIVED, _label(addon), key)
            if derived is None:
                states[_label(addon)] = addon.load_state(self.ctx, model)
                continue
            if slot not in derived:
                value = addon.load_state(self.ctx, model)
                derived[slot] = value
                sizes = derived.setdefault((self.DERIVED, "bytes"), {})
                sizes[slot] = state_bytes(value)
            states[_label(addon)] = derived[slot]
        for addon in self.addons:
            use = getattr(addon, "use_state", None)
            if use is not None and _label(addon) in states:
                use(states[_label(addon)])
        return states

    def components(self, model: Any) -> dict[str, Any]:
        """Modules the pipeline must take (by its argument name), from every add-on."""
        found: dict[str, Any] = {}
        for addon in self.addons:
            get = getattr(addon, "pipeline_components", None)
            for name, module in (get(self.ctx, model) if get is not None else {}).items():
                if name in found and found[name] is not module:
                    raise InvalidRequest("addons", f"add-ons {_label(addon)!r} and another both set the pipeline's {name}")
                found[name] = module
        return found

    # per call
    def apply(self, call: Any) -> list[Any]:
        """Each add-on's apply, in order; a kwarg an add-on set that the pipeline does not take is an
        InvalidRequest naming the add-on (what was applied is released first)."""
        applied: list[Any] = []
        try:
            for addon in self.addons:
                before = dict(call.kwargs)
                applied.append(addon)  # before apply(): one that fails halfway is released too (release must cope)
                if hasattr(addon, "apply"):
                    addon.apply(call)
                added = [k for k, v in call.kwargs.items() if (k not in before or before[k] is not v) and v is not None]
                refused = [k for k in added if not call.accepts(k)]
                if refused:
                    raise InvalidRequest(_label(addon), f"the add-on {_label(addon)!r} set {', '.join(refused)}, which "
                                                        f"{type(call.pipeline).__name__} does not take")
        except BaseException:
            self.release(call, applied)
            raise
        return applied

    def release(self, call: Any, applied: list[Any]) -> None:
        for addon in reversed(applied):
            if hasattr(addon, "release"):
                try:
                    addon.release(call)
                except Exception:  # noqa: BLE001 - one failed release must not keep the others from running
                    log.exception("add-on %s failed to release", _label(addon))

    # per step
    def tensor_inputs(self) -> list[str]:
        names: list[str] = []
        for addon in self.addons:
            for name in getattr(addon, "tensor_inputs", ()):
                if name not in names:
                    names.append(name)
        return names

    def on_step(self, step: StepState) -> dict[str, Any]:
        """Every add-on's on_step in order, each seeing the previous ones' replacements."""
        for addon in self.addons:
            hook = getattr(addon, "on_step", None)
            if hook is None:
                continue
            changed = hook(step)
            if changed:
                step.tensors.update(changed)
        return step.tensors



def derived_bytes(model: Any) -> int:
    """Bytes of every add-on's per-model state kept on `model`, for the memory budget."""
    derived = getattr(model, "derived", None) or {}
    return sum(derived.get((AddonSession.DERIVED, "bytes"), {}).values())

"""What a picture says about itself: A1111/Forge/SD.Next `parameters` (and Kiri's), ComfyUI's `prompt` and
`workflow` JSON, InvokeAI's `invokeai_metadata`, Fooocus's JSON `parameters`.

Only metadata is read (the file opened lazily, its pixels never decoded). Whatever a writer put there is
data: bad JSON, odd types and missing keys give fewer fields and a note, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from webui.engine.core.infotext import build_infotext, parse_infotext, read_infotext

MAX_TEXT = 1 << 20  # a metadata text longer than this is not read (a huge chunk is a note, not a crash)
_LORA_TAG = re.compile(r"<(?:lora|lyco):([^:>]+)", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


@dataclass
class Meta:
    """The searchable fields of one picture; `infotext` is A1111's text (made up for foreign formats)."""

    source: str = "none"  # a1111, comfyui, invokeai, fooocus, none
    prompt: str = ""
    negative: str = ""
    model: str = ""
    sampler: str = ""
    seed: int | None = None
    networks: list[str] = field(default_factory=list)  # LoRAs and embeddings used
    infotext: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""


def _str(value: Any) -> str:
    return value if isinstance(value, str) else (str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "")


def _int(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if -(2**63) <= number < 2**63 else None


def _json(value: str, what: str, meta: Meta) -> Any:
    if len(value) > MAX_TEXT:
        meta.note = f"{what}: {len(value):,} characters, not read"
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        meta.note = f"{what} is not valid JSON"
        return None


def read_meta(image: Any) -> Meta:
    """The metadata of a lazily opened PIL image."""
    info = getattr(image, "info", None) or {}
    meta = Meta()
    parameters = _text(info.get("parameters"))
    if parameters.lstrip().startswith("{"):
        data = _json(parameters, "parameters", meta)
        if isinstance(data, dict):
            return _fooocus(data, meta)
    if _text(info.get("invokeai_metadata")):
        data = _json(_text(info["invokeai_metadata"]), "invokeai_metadata", meta)
        if isinstance(data, dict):
            return _invokeai(data, meta)
    if _text(info.get("prompt")) or _text(info.get("workflow")):
        prompt = _json(_text(info.get("prompt")), "prompt", meta) if _text(info.get("prompt")) else None
        workflow = _json(_text(info.get("workflow")), "workflow", meta) if _text(info.get("workflow")) else None
        if isinstance(prompt, dict) or isinstance(workflow, dict):
            return _comfyui(prompt if isinstance(prompt, dict) else {}, workflow if isinstance(workflow, dict) else {}, meta)
    try:
        text = read_infotext(image) or ""
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block is a note
        meta.note = f"metadata unreadable: {type(exc).__name__}"
        return meta
    if text and len(text) <= MAX_TEXT:
        return _a1111(text, meta)
    if text:
        meta.note = f"parameters: {len(text):,} characters, not read"
    return meta


def _a1111(text: str, meta: Meta) -> Meta:
    parsed = parse_infotext(text)
    p = parsed.params
    meta.source, meta.infotext, meta.params = "a1111", text, dict(p)
    meta.prompt, meta.negative = parsed.prompt, parsed.negative_prompt
    meta.model, meta.sampler, meta.seed = p.get("Model", ""), p.get("Sampler", ""), _int(p.get("Seed"))
    names = _LORA_TAG.findall(parsed.prompt)
    for key in ("Lora hashes", "TI hashes"):
        names += [part.split(":", 1)[0].strip() for part in p.get(key, "").split(",") if ":" in part]
    meta.networks = _unique(names)
    return meta


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name and name not in out:
            out.append(name)
    return out


def _finish(meta: Meta, params: dict[str, Any]) -> Meta:
    """A1111's infotext for a foreign picture, so PNG info, Send to and Reproduce read it the same way."""
    params = {k: v for k, v in params.items() if v not in (None, "")}
    meta.params = {k: _str(v) for k, v in params.items()}
    try:
        meta.infotext = build_infotext(meta.prompt, meta.negative, params)
    except ValueError:
        meta.infotext = meta.prompt
    return meta


def _comfyui(prompt: dict, workflow: dict, meta: Meta) -> Meta:
    """ComfyUI: the API graph (`prompt`: id -> {class_type, inputs}) first, else the editor's `workflow`."""
    meta.source = "comfyui"
    nodes = {str(k): v for k, v in prompt.items() if isinstance(v, dict)}
    texts: dict[str, str] = {}
    positive = negative = None
    params: dict[str, Any] = {}
    for node_id, node in nodes.items():
        kind, inputs = _str(node.get("class_type")), node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        if "TextEncode" in kind:
            text = inputs.get("text") if isinstance(inputs.get("text"), str) else inputs.get("text_g")
            if isinstance(text, str):
                texts[node_id] = text
        elif kind.startswith("CheckpointLoader") and not meta.model:
            meta.model = _str(inputs.get("ckpt_name"))
        elif kind.startswith("Lora"):
            meta.networks.append(_str(inputs.get("lora_name")).rsplit(".", 1)[0])
        elif kind.startswith("KSampler"):
            pos, neg = inputs.get("positive"), inputs.get("negative")
            positive = str(pos[0]) if isinstance(pos, list) and pos else positive
            negative = str(neg[0]) if isinstance(neg, list) and neg else negative
            meta.sampler = meta.sampler or _str(inputs.get("sampler_name"))
            meta.seed = meta.seed if meta.seed is not None else _int(inputs.get("seed", inputs.get("noise_seed")))
            params.update({"Steps": _int(inputs.get("steps")), "CFG scale": inputs.get("cfg")})
        elif kind == "EmptyLatentImage":
            params["Size"] = f"{_int(inputs.get('width'))}x{_int(inputs.get('height'))}"
    if not nodes and isinstance(workflow.get("nodes"), list):  # only the editor's graph
        for node in workflow["nodes"]:
            if not isinstance(node, dict):
                continue
            kind, values = _str(node.get("type")), node.get("widgets_values")
            first = values[0] if isinstance(values, list) and values else None
            if "TextEncode" in kind and isinstance(first, str):
                texts[str(node.get("id"))] = first
            elif kind.startswith("CheckpointLoader") and isinstance(first, str) and not meta.model:
                meta.model = first
            elif kind.startswith("Lora") and isinstance(first, str):
                meta.networks.append(first.rsplit(".", 1)[0])
    if positive in texts:
        meta.prompt = texts.pop(positive)
        meta.negative = texts.pop(negative, "") if negative else ""
    else:
        meta.prompt = "\n".join(texts.values())
    meta.networks = _unique(meta.networks)
    params.update({"Sampler": meta.sampler, "Seed": meta.seed, "Model": meta.model})
    return _finish(meta, params)


def _invokeai(data: dict, meta: Meta) -> Meta:
    meta.source = "invokeai"
    meta.prompt, meta.negative = _str(data.get("positive_prompt")), _str(data.get("negative_prompt"))
    model = data.get("model")
    meta.model = _str(model.get("name") or model.get("model_name")) if isinstance(model, dict) else _str(model)
    meta.sampler = _str(data.get("scheduler"))
    meta.seed = _int(data.get("seed"))
    for lora in data.get("loras") or []:
        if isinstance(lora, dict):
            inner = lora.get("model") or lora.get("lora")
            meta.networks.append(_str(inner.get("name") or inner.get("model_name")) if isinstance(inner, dict) else _str(inner))
    meta.networks = _unique(meta.networks)
    size = f"{_int(data.get('width'))}x{_int(data.get('height'))}" if data.get("width") else None
    return _finish(meta, {"Steps": _int(data.get("steps")), "Sampler": meta.sampler, "CFG scale": data.get("cfg_scale"),
                          "Seed": meta.seed, "Size": size, "Model": meta.model})


def _fooocus(data: dict, meta: Meta) -> Meta:
    meta.source = "fooocus"
    meta.prompt = _str(data.get("full_prompt") if isinstance(data.get("full_prompt"), str) else data.get("prompt"))
    meta.negative = _str(data.get("negative_prompt") or data.get("full_negative_prompt"))
    meta.model = _str(data.get("base_model") or data.get("base_model_name"))
    meta.sampler, meta.seed = _str(data.get("sampler")), _int(data.get("seed"))
    for key, value in data.items():
        if isinstance(key, str) and key.startswith("lora") and isinstance(value, str) and value.strip():
            meta.networks.append(value.split(" : ")[0].strip().rsplit(".", 1)[0])
    meta.networks = _unique(meta.networks)
    size = None
    resolution = _str(data.get("resolution"))
    if (found := re.match(r"^\(?\s*(\d+)\s*,\s*(\d+)\s*\)?$", resolution)):
        size = f"{found.group(1)}x{found.group(2)}"
    return _finish(meta, {"Steps": _int(data.get("steps")), "Sampler": meta.sampler,
                          "CFG scale": data.get("guidance_scale"), "Seed": meta.seed, "Size": size, "Model": meta.model})

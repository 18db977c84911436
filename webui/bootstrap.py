"""Start-up: settings -> registries -> built-in capabilities and user extensions -> Engine.

Nothing else builds an Engine: launch.py, the tests and the tools all come through here. Each
capability registers itself with its `register(registries)`, with the same verbs an extension's
KiriAPI has, so the engine never imports a capability or the extension loader.
"""

from __future__ import annotations

from webui.engine import (controlnet, detailer, embeddings, ip_adapter, library, lora, segment, stepcache, styles, upscale,
                          vae, wildcards)
from webui.engine.generation import jobs as generation
from webui.engine.context import Engine, Registries
from webui.engine.core.devices import DeviceChoice
from webui.engine.settings import Settings
from webui.engine.video import service as video
from webui.extensions import ExtensionManager

# The built-in capabilities, in the order they register (upscale extends generation's job kinds; the
# detailer before it: its variant is chosen first and runs the one after it, hires fix or SD upscale,
# as its main pass; styles before wildcards: a style may hold dynamic prompts).
CAPABILITIES = (generation.register, detailer.register, upscale.register, segment.register, video.register, stepcache.register,
                vae.register, lora.register, controlnet.register, ip_adapter.register, embeddings.register, styles.register,
                wildcards.register, library.register)


def build_registries() -> Registries:
    registries = Registries()
    for register in CAPABILITIES:
        register(registries)
    return registries


def build_engine(settings: Settings, device: DeviceChoice | None = None) -> Engine:
    registries = build_registries()
    extensions = ExtensionManager(registries)
    extensions.load_all(settings.extensions_dirs(), set(settings.disabled_extensions), set(settings.enabled_extensions))
    return Engine(settings, registries, device, extensions)

"""Start-up: settings -> registries -> built-in and user extensions -> Engine.

Nothing else builds an Engine: launch.py, the tests and the tools all come through here, so the
engine never imports the extension loader (an arrow up) and built-ins register exactly as
extensions do.
"""

from __future__ import annotations

from webui.engine.context import Engine, Registries
from webui.engine.core.devices import DeviceChoice
from webui.engine.generation.call import builtin_addons
from webui.engine.settings import Settings
from webui.engine import stepcache
from webui.engine.video.service import job_kinds as video_job_kinds
from webui.extensions import ExtensionManager


def build_registries() -> Registries:
    registries = Registries()
    for spec in builtin_addons():
        registries.addons.register(spec)
    stepcache.register(registries)
    for kind in video_job_kinds():
        registries.job_kinds.register(kind)
    return registries


def build_engine(settings: Settings, device: DeviceChoice | None = None) -> Engine:
    registries = build_registries()
    extensions = ExtensionManager(registries)
    extensions.load_all(settings.extensions_dirs(), set(settings.disabled_extensions))
    return Engine(settings, registries, device, extensions)

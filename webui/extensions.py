"""Extensions: discovery, isolated loading, and the API their entry point receives.

An extension is a folder with `extension.toml` (name, version, description, entry, adds,
override) and a Python module. Its entry function receives a `KiriAPI` and declares what it
adds in one place. Kiri's own samplers load through this same loader from
webui/builtin_extensions/. An extension that fails to import or register is recorded with its
error and skipped; Kiri starts anyway.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from webui.engine.context import Registries
from webui.engine.core.errors import KiriError
from webui.engine.core.addons import AddonFactory, AddonSpec
from webui.engine.samplers.registry import FLOW, NOISE_PREDICTION, Sampler

log = logging.getLogger(__name__)

MANIFEST = "extension.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ExtensionError(Exception):
    pass


class Deferred:
    """A function or class in a file of an extension, imported on first use.

    Extensions load before the UI is built; one that imports torch or diffusers at the top adds
    seconds to every start. `kiri.later("file.py:name")` keeps such imports until a sampler runs.
    A deferred function is called like the function; a deferred class is fetched with `resolve()`.
    """

    def __init__(self, path: Path, module_name: str, attr: str):
        self.path, self.module_name, self.attr = path, module_name, attr
        self._target: Any = None

    def resolve(self) -> Any:
        if self._target is None:
            try:
                module = _import_file(self.path, self.module_name)
                target = getattr(module, self.attr)
            except Exception as exc:  # shown to the user as a clear error, not a traceback
                raise KiriError(f"{self.path.parent.name}: cannot import {self.path.name}:{self.attr}: {exc}") from exc
            self._target = target
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Deferred({self.path.name}:{self.attr})"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    entry: str  # "module_file.py:function"
    description: str = ""
    adds: tuple[str, ...] = ()
    override: bool = False  # may replace samplers of the same name (logged)
    enabled_by_default: bool = True  # false: off until the user enables it (Settings.enabled_extensions)

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ExtensionError(f"no {MANIFEST} in {folder.name}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ExtensionError(f"{MANIFEST} is not valid TOML: {exc}") from exc
        missing = [k for k in ("name", "version", "entry") if not data.get(k)]
        if missing:
            raise ExtensionError(f"{MANIFEST} lacks {', '.join(missing)}")
        if not _NAME.match(str(data["name"])):
            raise ExtensionError(f"extension name {data['name']!r} must be letters, digits, '.', '_' or '-'")
        if ":" not in str(data["entry"]):
            raise ExtensionError("entry must be 'module.py:function'")
        return cls(str(data["name"]), str(data["version"]), str(data["entry"]), str(data.get("description", "")),
                   tuple(str(a) for a in data.get("adds", [])), bool(data.get("override", False)),
                   bool(data.get("enabled_by_default", True)))


@dataclass(frozen=True)
class UITab:
    """A tab an extension adds; the UI (not the engine) renders it: render(engine) inside a gr.Tab."""

    title: str
    render: Callable[..., None]
    source: str


@dataclass
class ExtensionInfo:
    """One extension as the Extensions tab lists it."""

    name: str
    path: Path
    source: str  # "built-in" or "user"
    version: str = "?"
    description: str = ""
    adds: tuple[str, ...] = ()
    enabled: bool = True
    enabled_by_default: bool = True
    status: str = "loaded"  # "loaded", "disabled" or "error"
    error: str | None = None
    added: list[str] = field(default_factory=list)  # what it really registered


class KiriAPI:
    """What an extension's entry point receives: Kiri's registries, stamped with its name."""

    def __init__(self, manifest: Manifest, registries: Registries, info: ExtensionInfo, ui_tabs: list[UITab]):
        self.name = manifest.name
        self._manifest, self._info, self._ui_tabs = manifest, info, ui_tabs
        self._samplers, self._hooks, self._addons = registries.samplers, registries.hooks, registries.addons
        self._registries = registries
        self._staged: list[Callable[[], None]] = []  # applied only if the whole entry point succeeds

    def add_sampler(self, name: str, *, function: Callable[..., Any] | None = None, scheduler: type | str | Deferred | None = None,
                    options: dict | None = None, fits: frozenset[str] | set[str] = NOISE_PREDICTION,
                    aliases: tuple[str, ...] = (), flow: Callable[..., Any] | Sampler | None = None) -> None:
        """Add a sampler: a k-diffusion-style `function(denoiser, x, sigmas, *, generator, callback)`
        or a diffusers-style `scheduler` class (ConfigMixin with set_timesteps/step). `flow`: how it
        runs on flow-matching models (SD3, Flux), a function of the same form that is handed the flow
        noise levels s in [0, 1] and a denoiser giving x0 (see webui/engine/samplers/flow_samplers.py)."""
        if flow is not None and not isinstance(flow, Sampler):
            flow = Sampler(name, function=flow, fits=frozenset({FLOW}), source=self.name)
        sampler = Sampler(name, scheduler, dict(options or {}), frozenset(fits), tuple(aliases), function, self.name, flow)
        self._stage(lambda: self._samplers.register(sampler, override=self._manifest.override), f"sampler: {name}")

    def add_addon(self, name: str, factory: AddonFactory, infotext_keys: tuple[str, ...] = ()) -> None:
        """Add a pipeline add-on (see webui/engine/generation/call.py): factory(settings) -> Addon or None,
        used when a request's `addons` names it."""
        spec = AddonSpec(name, factory, tuple(infotext_keys), self.name)
        self._stage(lambda: self._addons.register(spec, override=self._manifest.override), f"add-on: {name}")

    def add_job_kind(self, name: str, request_type: type, work: Callable[[Any, Any], Callable],
                     load: Callable[[dict], Any] | None = None) -> None:
        """A kind of job POST /kiri/v1/jobs (and a worker process) can run: `request_type` a dataclass
        built from the plain request, `work(engine, request)` -> a generator function of the job."""
        from webui.engine.core.job_kinds import JobKind

        kind = JobKind(name, request_type, work, load)
        self._stage(lambda: self._registries.add_job_kind(kind), f"job kind: {name}")

    def extend_job_kind(self, name: str, when: Callable[[Any], bool], work: Callable[[Any, Any], Callable]) -> None:
        """A variant of another kind for the requests `when(request)` picks (as upscale adds the hires fix)."""
        self._stage(lambda: self._registries.extend_job_kind(name, when, work, self.name), f"job variant: {name}")

    def add_model_kind(self, name: str, folders: tuple[str, ...], label: str = "") -> None:
        """A kind of model file (safetensors files and model folders) under models/<folders[0]>/, the
        other folder names read too; the catalog lists and hashes them."""
        from webui.engine.models.catalog import ModelKind

        kind = ModelKind(name, tuple(folders), label=label or name)
        self._stage(lambda: self._registries.add_model_kind(kind), f"model kind: {name}")

    def add_loader(self, kind: str, loader: Callable[..., Any]) -> None:
        """How the model manager loads `kind`: loader(entry, device, allow_pickle) -> the loaded object.
        It shares the cache and memory budget; pickles reach it only under --allow-pickle."""
        self._stage(lambda: self._registries.add_loader(kind, loader), f"loader: {kind}")

    def later(self, reference: str) -> Deferred:
        """`"file.py:name"` in this extension's folder, imported on first use (see Deferred)."""
        module_file, _, attr = reference.partition(":")
        path = _extension_file(self._info.path, module_file)
        if not attr.isidentifier():
            raise ExtensionError(f"{reference!r}: write it as 'file.py:name'")
        return Deferred(path, _module_name(self.name, path.stem), attr)

    def on_app_started(self, hook: Callable[..., None]) -> None:
        self._stage(lambda: self._hooks.on_app_started.append(hook), "hook: on_app_started")

    def on_model_loaded(self, hook: Callable[..., None]) -> None:
        self._stage(lambda: self._hooks.on_model_loaded.append(hook), "hook: on_model_loaded")

    def before_generate(self, hook: Callable[..., Any]) -> None:
        """hook(request) -> request | None, before each generation."""
        self._stage(lambda: self._hooks.before_generate.append(hook), "hook: before_generate")

    def after_generate(self, hook: Callable[..., Any]) -> None:
        """hook(request, images) -> images | None, on each batch before it is saved."""
        self._stage(lambda: self._hooks.after_generate.append(hook), "hook: after_generate")

    def on_step(self, hook: Callable[..., None]) -> None:
        """hook(StepInfo) after each denoising step; read-only."""
        self._stage(lambda: self._hooks.on_step.append(hook), "hook: on_step")

    def add_tab(self, title: str, render: Callable[..., None]) -> None:
        """render(engine) is called inside a new gr.Tab of that title."""
        self._stage(lambda: self._ui_tabs.append(UITab(title, render, self.name)), f"tab: {title}")

    def _stage(self, apply: Callable[[], None], what: str) -> None:
        self._staged.append(apply)
        self._info.added.append(what)

    def commit(self) -> None:
        for apply in self._staged:
            apply()


class ExtensionManager:
    def __init__(self, registries: Registries):
        self.registries = registries
        self.extensions: list[ExtensionInfo] = []
        self.ui_tabs: list[UITab] = []

    def load_all(self, roots: list[tuple[Path, str]], disabled: set[str], enabled: set[str] = frozenset()) -> list[ExtensionInfo]:
        """Every extension folder under `roots`; `disabled` are off, and so are those whose manifest says
        `enabled_by_default = false` (the examples) unless they are in `enabled`."""
        for root, source in roots:
            if not root.is_dir():
                continue
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                self.extensions.append(self.load(folder, source, disabled, enabled))
        return self.extensions

    def load(self, folder: Path, source: str, disabled: set[str], enabled: set[str] = frozenset()) -> ExtensionInfo:
        info = ExtensionInfo(folder.name, folder, source)
        try:
            manifest = Manifest.read(folder)
            info.name, info.version, info.description, info.adds = manifest.name, manifest.version, manifest.description, manifest.adds
            info.enabled_by_default = manifest.enabled_by_default
            off = manifest.name in disabled or (not manifest.enabled_by_default and manifest.name not in enabled)
            if off and source != "built-in":
                info.enabled, info.status = False, "disabled"
                return info
            if any(e.name == manifest.name and e.status != "error" for e in self.extensions):
                raise ExtensionError(f"another extension is already named {manifest.name!r}")
            entry = _import_entry(folder, manifest)
            api = KiriAPI(manifest, self.registries, info, self.ui_tabs)
            entry(api)
            api.commit()
        except Exception as exc:  # noqa: BLE001 - a broken extension must not stop Kiri
            info.status, info.error = "error", _describe(exc)
            info.added.clear()
            log.error("extension %s failed to load: %s", folder.name, info.error)
        return info


def _module_name(*parts: str) -> str:
    """kiri_extensions.<extension>[.<file>], each part made a valid identifier."""
    return ".".join(["kiri_extensions", *(re.sub(r"[^A-Za-z0-9_]", "_", part) for part in parts)])


def _extension_file(folder: Path, module_file: str) -> Path:
    path = (folder / module_file).resolve()
    if not path.is_file() or folder.resolve() not in path.parents:
        raise ExtensionError(f"module {module_file!r} not found in the extension folder")
    return path


def _import_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path, submodule_search_locations=None)
    if spec is None or spec.loader is None:
        raise ExtensionError(f"cannot import {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    return module


def _import_entry(folder: Path, manifest: Manifest) -> Callable[[KiriAPI], None]:
    module_file, _, function_name = manifest.entry.partition(":")
    path = _extension_file(folder, module_file)
    module = _import_file(path, _module_name(manifest.name))
    entry = getattr(module, function_name, None)
    if not callable(entry):
        raise ExtensionError(f"{module_file} has no function {function_name!r}")
    return entry


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def install_extension(source: str, extensions_dir: Path) -> Path:
    """Copy an extension into extensions_dir from a local folder, a .zip file or a git URL.

    It is checked (manifest present and valid, no name clash, no path escaping the folder) before
    it lands; it loads at the next start.
    """
    import shutil
    import subprocess
    import tempfile
    import zipfile

    source = source.strip()
    if not source:
        raise ExtensionError("give a git URL, a folder or a .zip file to install from")
    extensions_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=extensions_dir, prefix=".install-") as tmp:
        staging = Path(tmp) / "ext"
        local = Path(source).expanduser()
        if local.is_dir():
            shutil.copytree(local, staging, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        elif local.is_file() and local.suffix.lower() == ".zip":
            with zipfile.ZipFile(local) as archive:
                for member in archive.namelist():
                    target = (staging / member).resolve()
                    if staging.resolve() != target and staging.resolve() not in target.parents:
                        raise ExtensionError(f"the zip file holds a path outside its folder: {member}")
                archive.extractall(staging)
            inner = [p for p in staging.iterdir() if p.is_dir()]
            if not (staging / MANIFEST).exists() and len(inner) == 1:
                staging = inner[0]
        elif re.match(r"^(https?://|git@|ssh://|file://)", source):
            result = subprocess.run(["git", "clone", "--depth", "1", "--", source, str(staging)],
                                    capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise ExtensionError(f"git clone failed: {result.stderr.strip()[:300]}")
        else:
            raise ExtensionError(f"{source!r} is not a folder, a .zip file or a git URL")
        manifest = Manifest.read(staging)
        target = extensions_dir / manifest.name
        if target.exists():
            raise ExtensionError(f"an extension named {manifest.name!r} is already installed")
        shutil.move(str(staging), str(target))
    return target

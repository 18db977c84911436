"""The Extensions tab: what is installed and whether it loaded, turn each on or off, install more."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.engine.context import Engine
from webui.extensions import ExtensionError, install_extension

INSTALL_LOCKED = (
    "Installing from the UI is off because this server is listening or shared: anyone who reaches it "
    "could run code on this machine. Restart with `--enable-insecure-extension-access` to allow it."
)


def table(engine: Engine) -> list[list[str]]:
    return [
        [e.name, e.version, e.source, e.status, ", ".join(e.added or e.adds), e.error or e.description]
        for e in engine.extensions.extensions
    ]


def render(engine: Engine, settings_file: Path) -> None:
    gr.Dataframe(table(engine), headers=["Name", "Version", "Source", "Status", "Adds", "Error / description"],
                 interactive=False, wrap=True, elem_id="extensions-table",
                 column_widths=["14%", "9%", "9%", "9%", "30%", "29%"])  # "Version" whole; "Adds" has room
    user = [e.name for e in engine.extensions.extensions if e.source == "user"]
    enabled = gr.CheckboxGroup(user, value=[e.name for e in engine.extensions.extensions if e.source == "user" and e.enabled],
                               label="Enabled extensions (takes effect on restart)", elem_id="extensions-enabled")
    apply = gr.Button("Apply")
    applied = gr.Markdown()

    def save_enabled(names: list[str]) -> str:
        on_by_default = {e.name for e in engine.extensions.extensions if e.source == "user" and e.enabled_by_default}
        engine.settings.disabled_extensions = sorted(on_by_default - set(names or []))
        engine.settings.enabled_extensions = sorted(set(names or []) - on_by_default)  # the examples, when asked for
        engine.settings.save(settings_file)
        return "Saved. Restart Kiri for the change to take effect."

    apply.click(save_enabled, enabled, applied, api_name="set_enabled_extensions")

    gr.Markdown("### Install")
    allowed = engine.settings.allow_extension_install and engine.settings.extensions_dir is not None
    source = gr.Textbox(label="Git URL, local folder or .zip file", interactive=allowed, elem_id="extensions-source")
    install = gr.Button("Install", interactive=allowed, elem_id="extensions-install")
    result = gr.Markdown("" if allowed else INSTALL_LOCKED, elem_id="extensions-install-result")

    def do_install(text: str) -> str:
        if not allowed:  # the button is off, but a crafted request must be refused too
            raise gr.Error(INSTALL_LOCKED)
        try:
            path = install_extension(text or "", Path(engine.settings.extensions_dir))
        except ExtensionError as exc:
            raise gr.Error(str(exc)) from exc
        return f"Installed into `{path}`. Restart Kiri to load it."

    install.click(do_install, source, result, api_name="install_extension")

"""The page's small chrome: a dark/light toggle remembered per browser (localStorage), and tooltips
on icon buttons (gr.Button has no tooltip of its own: the titles are set once the buttons exist).

The title's 霧 is shown only where the browser has a font that draws it (none of Debian's default
fonts do; a box would show instead). Icons are characters Debian's fonts draw (DejaVu has ↻ and ◐); emoji such as 🔄 need a colour
emoji font that a plain Chromium install lacks, and showed as empty boxes."""

from __future__ import annotations

import json

import gradio as gr

REFRESH = "↻"
STORAGE_KEY = "kiri-theme"
# elem_id (or ".class", for buttons repeated in panels) -> tooltip
TOOLTIPS = {
    "kiri-theme-toggle": "Switch between dark and light (remembered in this browser)",
    "sr-upscaler-refresh": "Read models/upscalers again (after adding a file)",
    "segment-model-refresh": "Read models/segmentation again (after adding a model)",
    "txt2img-vae-refresh": "Read models/VAE again (after adding a file)",
    "img2img-vae-refresh": "Read models/VAE again (after adding a file)",
    "txt2img-styles-refresh": "Read styles.csv again (after editing it)",
    "img2img-styles-refresh": "Read styles.csv again (after editing it)",
    "txt2img-extra-refresh": "Read the LoRA, embedding and checkpoint folders again (after adding a file)",
    "img2img-extra-refresh": "Read the LoRA, embedding and checkpoint folders again (after adding a file)",
    ".kiri-cn-refresh": "Read models/ControlNet and models/ipadapter again (after adding a model)",
}

# On load: the stored choice, and the tooltips on every icon button as it appears (tabs render lazily).
JS = """
() => {
  const stored = localStorage.getItem(%(key)s);
  if (stored === 'dark') document.body.classList.add('dark');
  if (stored === 'light') document.body.classList.remove('dark');
  const tips = %(tips)s;
  const apply = () => {
    for (const [id, text] of Object.entries(tips)) {
      const found = id.startsWith('.') ? document.querySelectorAll(id) : [document.getElementById(id)];
      for (const el of found) {
        const button = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
        if (button && button.title !== text) { button.title = text; button.setAttribute('aria-label', text); }
      }
    }
  };
  apply();
  new MutationObserver(apply).observe(document.body, {childList: true, subtree: true});
  // The title's 霧 needs a CJK font; a browser without one would draw an empty box: it is left out then.
  window.kiriGlyphShown = (ch) => {
    const draw = (text) => {
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = 40;
      const ctx = canvas.getContext('2d');
      ctx.font = '32px sans-serif';
      ctx.fillText(text, 2, 32);
      return ctx.getImageData(0, 0, 40, 40).data.join(',');
    };
    return draw(ch) !== draw('\uE000');  // a private-use point: the font's "missing" box
  };
  const kanji = document.querySelector('#kiri-title .kiri-kanji');
  if (kanji && !window.kiriGlyphShown(kanji.textContent.trim())) kanji.style.display = 'none';
}
""" % {"key": json.dumps(STORAGE_KEY), "tips": json.dumps(TOOLTIPS)}

TOGGLE_JS = """
() => {
  const dark = document.body.classList.toggle('dark');
  localStorage.setItem(%s, dark ? 'dark' : 'light');
}
""" % json.dumps(STORAGE_KEY)


def toggle_button() -> gr.Button:
    """◐: dark or light, for this browser from now on."""
    button = gr.Button("◐ Dark / light", size="sm", variant="secondary", scale=0, min_width=120, elem_id="kiri-theme-toggle")
    button.click(None, None, None, js=TOGGLE_JS, api_visibility="private", queue=False)
    return button


def load(app: gr.Blocks) -> None:
    app.load(None, None, None, js=JS)

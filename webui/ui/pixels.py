"""Small pictures shown big: input pictures fill their box with crisp pixels, and a click on one comes
back in the picture's own pixels.

Gradio's select event on gr.Image assumes a picture is never drawn larger than its size (it clamps the
scale to 1), so on a 64 px picture shown at 400 px it reports wrong pixels, or nothing away from the
centre. A click listener here computes the pixel from the drawn size instead and types "x,y,stamp"
into a hidden textbox beside the picture (`click_box`); the tab wires that textbox's `input` event.
"""

from __future__ import annotations

import gradio as gr

# Pictures that are inputs or previews of inputs: scaled up (or down) to the box, never blurred.
SCALED = ("img2img-image", "outpaint-image", "inpaint-mask", "sr-image", "segment-image", "segment-preview",
          "segment-mask", "vid2vid-first-frame")

CSS = "\n".join([
    ", ".join(f"#{i} img" for i in SCALED)
    + " {width: 100% !important; height: 100% !important; max-width: none !important; max-height: none !important;"
      " object-fit: contain; image-rendering: pixelated;}",
    ".kiri-click-xy {display: none !important;}",
])

# Runs once on page load: one capture-phase listener for every picture that has a click box.
JS = """
() => {
  if (window.kiriPixelClicks) return;
  window.kiriPixelClicks = true;
  document.addEventListener('click', (event) => {
    const img = event.target.closest ? event.target.closest('img') || event.target.querySelector?.('img') : null;
    if (!img || !img.naturalWidth) return;
    let root = img.parentElement, box = null;
    while (root && !box) {
      if (root.id) box = document.querySelector('#' + CSS.escape(root.id + '-xy') + ' textarea, #' + CSS.escape(root.id + '-xy') + ' input');
      root = root.parentElement;
    }
    if (!box) return;
    const rect = img.getBoundingClientRect();
    const scale = Math.min(rect.width / img.naturalWidth, rect.height / img.naturalHeight);
    const left = rect.left + (rect.width - img.naturalWidth * scale) / 2;
    const top = rect.top + (rect.height - img.naturalHeight * scale) / 2;
    const x = Math.floor((event.clientX - left) / scale), y = Math.floor((event.clientY - top) / scale);
    if (x < 0 || y < 0 || x >= img.naturalWidth || y >= img.naturalHeight) return;
    box.value = `${x},${y},${Date.now()}`;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }, true);
}
"""


def click_box(image: gr.Image) -> gr.Textbox:
    """The hidden textbox a click on `image` arrives in, as "x,y,stamp" in the picture's pixels."""
    return gr.Textbox(visible="hidden", elem_id=f"{image.elem_id}-xy", elem_classes=["kiri-click-xy"],
                      show_label=False, container=False)


def clicked(text: str | None) -> tuple[int, int] | None:
    """"12,30,1712345" -> (12, 30); None when empty or unreadable."""
    try:
        x, y = (int(v) for v in (text or "").split(",")[:2])
    except ValueError:
        return None
    return x, y

"""Driving Kiri from gradio_client, as scripts and share-link users do, by stable api_names."""

from __future__ import annotations

import pytest
from PIL import Image

from webui.engine.core.infotext import pnginfo_for

A1111_TEXT = (
    "masterpiece, 1girl\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, Schedule type: Karras, "
    "CFG scale: 6.5, Seed: 3658125236, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    "Version: v1.10.1"
)


@pytest.fixture(scope="module")
def client(kiri_server):
    from gradio_client import Client

    return Client(kiri_server["url"], verbose=False)


def txt2img_args(**kw):
    args = dict(prompt="a blue square", negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=2, cfg_scale=7,
                seed=42, width=64, height=64, batch_size=2, batch_count=1)
    args.update(kw)
    return args


def test_named_endpoints_exist(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/txt2img", "/png_info", "/interrupt", "/load_model", "/refresh_models"} <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/txt2img"]["parameters"]]
    assert names[:3] == ["prompt", "negative_prompt", "sampler_name"]
    # the ControlNet / IP-Adapter units come after, all optional: older scripts keep working unchanged
    for endpoint in ("/txt2img", "/img2img"):
        units = [p for p in endpoints[endpoint]["parameters"] if p["parameter_name"].startswith("cn")]
        assert {"cn0_enabled", "cn0_image", "cn0_module", "cn0_model"} <= {p["parameter_name"] for p in units}
        assert all(p["parameter_has_default"] for p in units)


def test_txt2img_over_gradio_client(client):
    gallery, infotext, status = client.predict(**txt2img_args(), api_name="/txt2img")
    assert len(gallery) == 2
    image = Image.open(gallery[0]["image"])
    assert image.size == (64, 64)
    assert "Seed: 42" in infotext and "Sampler: Euler" in infotext
    assert "2 image(s)" in status


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"width": 100}, "width must be a multiple of 8"),
        ({"prompt": ""}, "the prompt is empty"),
        ({"sampler_name": "Nope"}, "unknown sampler 'Nope'"),
        ({"steps": 0}, "less than minimum value 1"),  # the slider itself refuses it
    ],
)
def test_bad_input_comes_back_as_a_readable_error(client, bad, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(**txt2img_args(**bad), api_name="/txt2img")


def test_png_info_reads_an_automatic1111_png(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=pnginfo_for(A1111_TEXT))
    text, fields = client.predict(handle_file(str(path)), api_name="/png_info")
    assert text == A1111_TEXT
    assert fields["Prompt"] == "masterpiece, 1girl" and fields["Sampler"] == "Euler a" and fields["Seed"] == "3658125236"


def test_png_info_on_a_plain_image(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    text, fields = client.predict(handle_file(str(path)), api_name="/png_info")
    assert "no generation parameters" in text and not fields


def test_extension_install_is_refused_when_not_allowed(client, tmp_path):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Installing from the UI is off"):
        client.predict(str(tmp_path), api_name="/install_extension")


def test_sampler_lab_plots_a_comparison(client):
    plot, table = client.predict(["Euler", "DDIM", "Flow Euler"], "Noise (epsilon)", "Automatic", "4, 16",
                                 api_name="/sampler_check")
    image = Image.open(plot)
    assert image.size[0] > 200 and image.size[1] > 150
    assert "| Euler | epsilon |" in table and "| DDIM | epsilon |" in table
    assert "Not shown" in table and "Flow Euler" in table  # it does not fit a noise-prediction model

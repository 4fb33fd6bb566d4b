"""The page, its static files and the model card: self-contained, nothing fetched elsewhere."""

from __future__ import annotations

import re
import shutil

import pytest
from fastapi.testclient import TestClient

from breastpath.inference.predictor import Predictor
from breastpath.serve.app import create_app
from breastpath.serve.modelcard import markdown_to_html

EXTERNAL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


def test_page_has_the_controls(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    assert re.search(r'<input[^>]*type="file"[^>]*multiple', html)
    assert 'accept="image/*,.tif,.tiff,.bmp,.zip"' in html
    for element in ("drop", "preview", "overlay", "stain", "tiles", "results", "csv", "label"):
        assert f'id="{element}"' in html, element
    assert 'href="/model-card"' in html
    assert '<script src="/static/app.js">' in html
    assert "style=" not in html  # the Content-Security-Policy allows no inline style


def test_page_forbids_outside_resources(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/", "text/html"), ("/static/app.js", "javascript"), ("/static/app.css", "text/css")],
)
def test_nothing_is_fetched_from_elsewhere(client, path, kind):
    response = client.get(path)
    assert response.status_code == 200
    assert kind in response.headers["content-type"]
    assert not EXTERNAL.search(response.text), EXTERNAL.search(response.text)
    assert "@import" not in response.text


def test_script_uses_the_api(client):
    script = client.get("/static/app.js").text
    for route in ("/api/predict?explain=true", "/api/predict/batch", "/api/models"):
        assert route in script
    assert "text/csv" in script and "download" in script


def test_model_card_html_and_markdown(client):
    markdown = client.get("/api/model-card")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# Model card: efficientnet-idc")
    page = client.get("/model-card")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        "<h1>Model card: efficientnet-idc (the bundled <code>default</code> model)</h1>"
        in page.text
    )
    assert "<table>" in page.text and "<strong>Research use only." in page.text
    assert not EXTERNAL.search(page.text)


def test_model_card_of_a_checkpoint_without_one(predictor, tmp_path):
    source = predictor.checkpoint.path
    for path in source.parent.glob(f"{source.stem}.*"):  # JSON, weights, int8 network
        shutil.copy(path, tmp_path / path.name)
    copy = Predictor.from_checkpoint(tmp_path / source.name)
    with TestClient(create_app(copy)) as client:
        text = client.get("/api/model-card").text
    assert "No model card was shipped" in text and copy.name in text
    (tmp_path / "MODEL_CARD.md").write_text("# Our own card\n", encoding="utf-8")
    with TestClient(create_app(copy)) as client:
        assert "<h1>Our own card</h1>" in client.get("/model-card").text


def test_markdown_is_escaped():
    html = markdown_to_html("# A <b>title</b>\n\n| a | b |\n| --- | --- |\n| <i> | `x` |\n")
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert "<td>&lt;i&gt;</td><td><code>x</code></td>" in html
    listing = markdown_to_html("- one\n- *two*\n\n```\n<raw>\n```")
    assert "<ul><li>one</li><li><em>two</em></li></ul>" in listing
    assert "<pre>&lt;raw&gt;</pre>" in listing


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/predict/batch", "/api/models", "/api/health"} <= set(paths)
    parameters = paths["/api/predict"]["post"]["parameters"]
    assert any(p["name"] == "explain" for p in parameters)
    assert {"413", "415"} <= set(paths["/api/predict"]["post"]["responses"])


def test_every_link_of_the_page_exists(client):
    """Issue 32, item 2: the header's "API docs" went to a 404."""
    html = client.get("/").text
    links = re.findall(r'href="(/[^"]*)"', html)
    assert "/docs" in links and "/openapi.json" in links
    for link in links:
        assert client.get(link).status_code == 200, link


def test_api_docs_page_is_rendered_here_from_the_schema(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method in item:
            assert f"<code>{method.upper()} {path}</code>" in html, (method, path)
    assert "<code>file</code>" in html and "<code>files</code>" in html  # the multipart fields
    assert "<code>explain</code>" in html and "file[] (1-64)" in html
    assert "<code>413</code>" in html and "upload, image or batch over a limit" in html
    assert not EXTERNAL.search(html) and "<script" not in html

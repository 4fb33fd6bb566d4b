"""The access token (``breastpath serve --token``): a server on a non-loopback host refuses to
start without one (or ``--insecure-public``); with one, every route but the static files and
the health check needs it (header, or the cookie a ``?token=`` link sets), else 401."""

from __future__ import annotations

from pathlib import Path

import pytest

from breastpath.errors import ConfigError
from breastpath.serve.access import COOKIE, check_exposure, is_loopback
from breastpath.slide.synthetic import write_synthetic_slide

TOKEN = "s3cret-token-0123456789"
WRONG = "wrong-token-0123456789"
GUARDED = [
    "/",
    "/slides",
    "/slides/one",
    "/api/slides",
    "/api/slides/one",
    "/api/slides/one.dzi",
    "/api/slides/one_files/0/0_0.jpeg",
    "/api/slides/one/thumbnail.jpeg",
    "/api/slides/one/job",
    "/api/slides/nope",
    "/api/models",
    "/model-card",
    "/docs",
    "/openapi.json",
]


@pytest.fixture(scope="module")
def api(predictor, tmp_path_factory):
    from fastapi.testclient import TestClient

    from breastpath.serve.app import create_app
    from breastpath.slide.catalog import SlideCatalog

    root: Path = tmp_path_factory.mktemp("access")
    write_synthetic_slide(root / "one.tif", size=(600, 400), tile=256, downsamples=(1,))
    app = create_app(predictor, slides=SlideCatalog(root), token=TOKEN)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("url", GUARDED)
def test_every_route_needs_the_token(api, url):
    api.cookies.clear()
    refused = api.get(url)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "token" in refused.json()["detail"]
    assert api.get(url, headers={"Authorization": f"Bearer {WRONG}"}).status_code == 401
    assert api.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code != 401
    assert api.get(url, headers={"X-Breastpath-Token": TOKEN}).status_code != 401


def test_posts_need_it_too(api):
    api.cookies.clear()
    assert api.post("/api/slides/one/analyze").status_code == 401
    assert api.post(f"/api/slides/one/analyze?token={TOKEN}").status_code == 401  # links: GET only
    assert api.post("/api/predict").status_code == 401


def test_static_files_and_health_are_open(api):
    api.cookies.clear()
    assert api.get("/static/viewer.js").status_code == 200
    assert api.get("/api/health").status_code == 200


def test_a_token_link_sets_the_cookie_and_drops_the_token(api):
    api.cookies.clear()
    assert api.get(f"/slides?token={WRONG}", follow_redirects=False).status_code == 401
    answer = api.get(f"/slides?token={TOKEN}&x=1", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/slides?x=1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN}")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert api.get("/api/slides").status_code == 200  # the client kept the cookie
    assert api.get("/slides/one").status_code == 200
    api.cookies.clear()
    api.cookies.set(COOKIE, WRONG)
    assert api.get("/api/slides").status_code == 401
    api.cookies.clear()


def test_start_up_rule():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.2") and not is_loopback("host")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", TOKEN)
    check_exposure("0.0.0.0", None, insecure_public=True)
    with pytest.raises(ConfigError, match="--token"):
        check_exposure("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 16"):
        check_exposure("127.0.0.1", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        check_exposure("127.0.0.1", "has a space; and more text")


def test_the_command_refuses_a_public_host_without_a_token(capsys, monkeypatch):
    from breastpath.cli.main import main

    monkeypatch.delenv("BREASTPATH_TOKEN", raising=False)
    code = main(["serve", "--host", "0.0.0.0", "--port", "0"])
    assert code != 0
    err = capsys.readouterr().err
    assert "--token" in err and "--insecure-public" in err

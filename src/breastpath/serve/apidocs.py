"""``GET /docs``: the API described as a plain HTML page, rendered from the app's own OpenAPI
document (so it is never out of date), with nothing fetched from elsewhere.

FastAPI's Swagger UI and ReDoc load their scripts from a CDN, which the page's
Content-Security-Policy (and an offline machine) forbids; this page needs only ``/static/app.css``.
Each route gets its method and path, summary, description, query parameters, multipart fields
and answers; the raw document stays at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

_METHODS = ("get", "head", "post", "put", "patch", "delete")


def _ref(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``$ref`` to ``#/components/schemas/...`` resolved (one level)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    name = ref.rsplit("/", 1)[-1]
    found = spec.get("components", {}).get("schemas", {}).get(name, {})
    return found if isinstance(found, dict) else {}


def schema_type(schema: dict[str, Any]) -> str:
    """A short type for a JSON schema: ``boolean``, ``file``, ``file[] (1-64)``, ``"40" | "100"``.

    Examples
    --------
    >>> schema_type({"type": "array", "items": {"type": "string",
    ...     "contentMediaType": "application/octet-stream"}, "minItems": 1, "maxItems": 64})
    'file[] (1-64)'
    >>> schema_type({"anyOf": [{"enum": ["40", "100"], "type": "string"}, {"type": "null"}]})
    '"40" | "100" | null'
    """
    if "anyOf" in schema:
        return " | ".join(schema_type(part) for part in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(
            f'"{value}"' if isinstance(value, str) else str(value) for value in schema["enum"]
        )
    if schema.get("contentMediaType") == "application/octet-stream" or schema.get("format") in (
        "binary",
    ):
        return "file"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        items = schema_type(schema.get("items", {}))
        low, high = schema.get("minItems"), schema.get("maxItems")
        bounds = f" ({low}-{high})" if low is not None and high is not None else ""
        return f"{items}[]{bounds}"
    return kind


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _parameters(operation: dict[str, Any]) -> str:
    rows = []
    for param in operation.get("parameters", []):
        schema = param.get("schema", {})
        default = schema.get("default")
        rows.append(
            (
                f"<code>{escape(str(param.get('name')))}</code>",
                escape(str(param.get("in", ""))),
                escape(schema_type(schema)),
                "yes" if param.get("required") else f"no (default {escape(str(default))})",
                escape(str(param.get("description") or schema.get("description") or "")),
            )
        )
    if not rows:
        return ""
    return "<h3>Parameters</h3>" + _table(("name", "in", "type", "required", "what"), rows)


def _body(spec: dict[str, Any], operation: dict[str, Any]) -> str:
    content = operation.get("requestBody", {}).get("content", {})
    blocks = []
    for media, entry in content.items():
        schema = _ref(spec, entry.get("schema", {}))
        required = set(schema.get("required", []))
        rows = [
            (
                f"<code>{escape(name)}</code>",
                escape(schema_type(field)),
                "yes" if name in required else "no",
                escape(str(field.get("description", ""))),
            )
            for name, field in schema.get("properties", {}).items()
        ]
        blocks.append(
            f"<h3>Body: <code>{escape(media)}</code></h3>"
            + _table(("field", "type", "required", "what"), rows)
        )
    return "".join(blocks)


def _responses(operation: dict[str, Any]) -> str:
    rows = [
        (f"<code>{escape(str(status))}</code>", escape(str(answer.get("description", ""))))
        for status, answer in sorted(operation.get("responses", {}).items())
    ]
    return "<h3>Answers</h3>" + _table(("status", "what"), rows) if rows else ""


def _operation(spec: dict[str, Any], path: str, method: str, operation: dict[str, Any]) -> str:
    anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
    summary = escape(str(operation.get("summary", "")))
    description = operation.get("description", "")
    text = f"<p>{escape(str(description))}</p>" if description else ""
    return (
        f'<section id="{escape(anchor)}"><h2><code>{method.upper()} {escape(path)}</code></h2>'
        f"<p><strong>{summary}</strong></p>{text}"
        f"{_parameters(operation)}{_body(spec, operation)}{_responses(operation)}</section>"
    )


def api_docs_page(spec: dict[str, Any]) -> str:
    """The whole HTML page for the OpenAPI document ``spec`` (every text escaped).

    Examples
    --------
    >>> spec = {"info": {"title": "t", "version": "1"}, "paths": {"/api/health": {"get": {
    ...     "summary": "Liveness", "responses": {"200": {"description": "ok"}}}}}}
    >>> "<code>GET /api/health</code>" in api_docs_page(spec)
    True
    """
    info = spec.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    sections, index = [], []
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                sections.append(_operation(spec, path, method, item[method]))
                anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
                index.append(
                    f'<li><a href="#{escape(anchor)}"><code>{method.upper()} '
                    f"{escape(path)}</code></a> {escape(str(item[method].get('summary', '')))}</li>"
                )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>API: {escape(title)}</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/app.css"></head><body class="card">'
        f'<header><h1>API: {escape(title)}</h1><nav><a href="/">Back to the page</a> · '
        '<a href="/model-card">Model card</a> · <a href="/openapi.json">openapi.json</a>'
        "</nav></header>"
        f"<article><p>{escape(str(info.get('description', '')))}</p>"
        '<p>Every error is JSON <code>{"detail": "..."}</code> (a 422 adds '
        "<code>errors</code>). Example: <code>curl -F file=@patch.png "
        "'http://HOST:PORT/api/predict?explain=true'</code>.</p>"
        f"<ul>{''.join(index)}</ul>{''.join(sections)}</article></body></html>"
    )

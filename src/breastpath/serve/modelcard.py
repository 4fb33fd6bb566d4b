"""The model card of the served checkpoint, as Markdown and as a small self-contained HTML page.

A bundled checkpoint's card ships beside it in ``breastpath/assets`` under the name given by
:data:`breastpath.checkpoint.BUNDLED_CARDS` (``MODEL_CARD.md`` for ``default``,
``MODEL_CARD_breakhis.md`` for ``breakhis``); another checkpoint's card is the ``MODEL_CARD.md``
next to it; without one, a short card is written from the checkpoint's metadata. The Markdown
subset used by model cards (headings, paragraphs, lists, tables, bold, italics, inline code) is
rendered here, so no extra dependency is needed.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

_CARD = "MODEL_CARD.md"


def model_card_markdown(checkpoint_path: Path, description: dict[str, Any]) -> str:
    """The Markdown model card for a checkpoint (see the module docstring for the search order)."""
    from breastpath.checkpoint import BUNDLED_CARDS, assets_dir, bundled_name

    checkpoint_path = Path(checkpoint_path)
    if checkpoint_path.parent.resolve() == assets_dir().resolve():
        name = bundled_name(checkpoint_path)
        # never show one bundled model's card for another
        candidates = [assets_dir() / BUNDLED_CARDS[name]] if name in BUNDLED_CARDS else []
    else:
        candidates = [checkpoint_path.parent / _CARD]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return (
        f"# Model card: {description.get('name')}\n\n"
        "**Research use only. Not a diagnostic device.**\n\n"
        "No model card was shipped with this checkpoint; this is what its metadata says.\n\n"
        f"```\n{json.dumps(description, indent=2)}\n```\n"
    )


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", out)
    return out


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    body = [r for r in cells[1:] if not all(re.fullmatch(r":?-{3,}:?", c) for c in r)]
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    lines = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def markdown_to_html(text: str) -> str:
    """Render the Markdown subset of model cards to HTML (everything escaped).

    Examples
    --------
    >>> markdown_to_html("# Title\\n\\nSome **bold** <b>text</b>.")
    '<h1>Title</h1>\\n<p>Some <strong>bold</strong> &lt;b&gt;text&lt;/b&gt;.</p>'
    """
    blocks: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append(f"<pre>{html.escape(chr(10).join(lines[i + 1 : j]))}</pre>")
            i = j + 1
        elif match := re.match(r"(#{1,6})\s+(.*)", line):
            level = len(match.group(1))
            blocks.append(f"<h{level}>{_inline(match.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            blocks.append(_table(lines[i:j]))
            i = j
        elif re.match(r"\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                items.append(f"<li>{_inline(item)}</li>")
                i += 1
            blocks.append("<ul>" + "".join(items) + "</ul>")
        else:
            j = i
            while (
                j < len(lines)
                and lines[j].strip()
                and not re.match(r"(#{1,6}\s|\||```|\s*[-*]\s+)", lines[j])
            ):
                j += 1
            blocks.append(f"<p>{_inline(' '.join(s.strip() for s in lines[i:j]))}</p>")
            i = j
    return "\n".join(blocks)


def model_card_page(markdown: str, title: str) -> str:
    """A complete HTML page (inline style, nothing fetched) around the rendered card."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/app.css"></head>'
        '<body class="card"><p><a href="/">&larr; back to the app</a> · '
        '<a href="/api/model-card">Markdown</a></p>'
        f"<article>{markdown_to_html(markdown)}</article></body></html>"
    )

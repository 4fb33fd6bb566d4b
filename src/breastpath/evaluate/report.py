"""A self-contained evaluation report: ``report.html`` (images embedded) and ``report.md``.

The HTML file holds everything it shows (images as base64 ``data:`` URIs, an inline
stylesheet, no scripts, no links to other sites), so it can be mailed or archived on its own.
The Markdown file holds the same tables and links to the images by relative path.
"""

from __future__ import annotations

import base64
import json
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from breastpath.errors import ConfigError
from breastpath.io import atomic_write_text, markdown_table

__all__ = ["write_report"]

# Known scalar metrics, in display order, with their labels. Other scalars follow, as named.
_METRIC_LABELS: dict[str, str] = {
    "n": "Items (n)",
    "n_positive": "Positives",
    "n_negative": "Negatives",
    "threshold": "Threshold",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "f1_macro": "F1 (macro)",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
}
_BINARY_CLASSES = ("0 (negative)", "1 (positive)")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_HTML_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
         color: #1f2328; background: #fff; line-height: 1.5; margin: 0; }
  main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
  h1 { font-size: 1.7rem; margin: 0 0 .3rem; }
  h2 { font-size: 1.25rem; margin: 2.2rem 0 .8rem; padding-bottom: .3rem;
       border-bottom: 1px solid #d0d7de; }
  h3 { font-size: 1.02rem; margin: 1.2rem 0 .5rem; }
  .subtitle { color: #57606a; margin: 0; }
  table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .92rem; }
  th, td { border: 1px solid #d0d7de; padding: .35rem .7rem; }
  th { background: #f6f8fa; text-align: left; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tbody tr:nth-child(even) td { background: #fbfcfd; }
  td.na { color: #8c959f; text-align: center; }
  table.cm td { min-width: 4.5rem; }
  .cms { display: flex; flex-wrap: wrap; gap: 2rem; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.2rem; }
  dt { font-weight: 600; color: #57606a; }
  dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, SFMono-Regular, Menlo,
       Consolas, monospace; font-size: .88rem; }
  ul.notes li { margin: .25rem 0; }
  figure { margin: 1rem 0 2rem; }
  figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
  figcaption { color: #57606a; font-size: .9rem; margin-top: .3rem; }
  @media print { main { max-width: none; padding: 0; } figure { break-inside: avoid; } }
</style>
</head>
<body>
{% macro cell(value) -%}
  {% if value is none %}<td class="na">&ndash;</td>
  {%- else %}<td class="num">{{ value }}</td>{% endif %}
{%- endmacro %}
{% macro body_row(row) -%}
  <tr><th>{{ row[0] }}</th>{% for value in row[1:] %}{{ cell(value) }}{% endfor %}</tr>
{%- endmacro %}
<main>
<h1>{{ title }}</h1>
<p class="subtitle">breastpath {{ version }} evaluation report</p>

{% if run_info %}
<h2>Run</h2>
<dl>
{% for key, value in run_info %}
  <dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}
</dl>
{% endif %}

{% if table.rows %}
<h2>Metrics</h2>
<table class="metrics">
  <thead><tr><th>Metric</th>{% for s in table.sections %}<th>{{ s }}</th>{% endfor %}</tr></thead>
  <tbody>
  {% for label, cells in table.rows %}
    {{ body_row([label] + cells) }}
  {% endfor %}
  </tbody>
</table>
{% endif %}

{% for pc in per_class %}
<h3>Per class: {{ pc.section }}</h3>
<table>
  <thead><tr>{% for h in pc.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
  <tbody>
  {% for row in pc.rows %}
    {{ body_row(row) }}
  {% endfor %}
  </tbody>
</table>
{% endfor %}

{% if cms %}
<h2>Confusion matrices</h2>
<p>Rows: true class; columns: predicted class.</p>
<div class="cms">
{% for cm in cms %}
<div>
<h3>{{ cm.section }}</h3>
<table class="cm">
  <thead><tr><th>true \\ predicted</th>
    {%- for c in cm.classes %}<th>{{ c }}</th>{% endfor %}</tr></thead>
  <tbody>
  {% for row in cm.rows %}
    {{ body_row(row) }}
  {% endfor %}
  </tbody>
</table>
</div>
{% endfor %}
</div>
{% endif %}

{% if notes %}
<h2>Notes</h2>
<ul class="notes">
{% for note in notes %}
  <li>{{ note }}</li>
{% endfor %}
</ul>
{% endif %}

{% if figures %}
<h2>Figures</h2>
{% for fig in figures %}
<figure>
  <img src="{{ fig.uri }}" alt="{{ fig.caption }}">
  <figcaption>{{ fig.caption }}</figcaption>
</figure>
{% endfor %}
{% endif %}
</main>
</body>
</html>
"""


# --------------------------------------------------------------------------------------------
# shaping the data for both formats
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str | None:
    """Display text of a metric value; ``None`` for a missing / undefined one."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):d}"
    if isinstance(value, numbers.Real):
        value = float(value)
        return "nan" if value != value else f"{value:.4f}"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, numbers.Real | str)


def _metric_table(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    sections = list(metrics)
    keys: list[str] = [k for k in _METRIC_LABELS if any(k in m for m in metrics.values())]
    for m in metrics.values():
        for k, v in m.items():
            if k not in keys and _is_scalar(v) and k != "class_names":
                keys.append(k)
    rows = []
    for k in keys:
        cells = [
            _fmt(metrics[s].get(k)) if _is_scalar(metrics[s].get(k)) else None for s in sections
        ]
        rows.append((_METRIC_LABELS.get(k, k.replace("_", " ").capitalize()), cells))
    return {"sections": sections, "rows": rows}


def _class_names(section: Mapping[str, Any], size: int, run_info: Mapping[str, Any]) -> list[str]:
    names = section.get("class_names")
    if names is None:
        names = run_info.get("class_names")
    if names is not None and len(names) == size:
        return [str(c) for c in names]
    if size == 2:
        return list(_BINARY_CLASSES)
    return [str(i) for i in range(size)]


def _confusion_matrices(
    metrics: Mapping[str, Mapping[str, Any]], run_info: Mapping[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for section, m in metrics.items():
        cm = m.get("confusion_matrix")
        if not cm:
            continue
        classes = _class_names(m, len(cm), run_info)
        rows = [[classes[i], *(_fmt(v) or "" for v in row)] for i, row in enumerate(cm)]
        out.append({"section": section, "classes": classes, "rows": rows})
    return out


def _per_class_tables(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for section, m in metrics.items():
        per_class = m.get("per_class")
        if not isinstance(per_class, Mapping) or not per_class:
            continue
        columns: list[str] = []
        for stats in per_class.values():
            columns += [c for c in stats if c not in columns]
        header = ["class", *(c.replace("_", " ") for c in columns)]
        rows = [
            [str(name), *((_fmt(stats.get(c)) or "–") for c in columns)]
            for name, stats in per_class.items()
        ]
        out.append({"section": section, "header": header, "rows": rows})
    return out


def _run_info_items(run_info: Mapping[str, Any]) -> list[tuple[str, str]]:
    items = []
    for key, value in run_info.items():
        if isinstance(value, Mapping | list | tuple):
            text = json.dumps(value, default=str)
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        items.append((str(key).replace("_", " "), text))
    return items


def _resolve_plot(path: str | os.PathLike[str], out_dir: Path) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (out_dir / p).exists():
        p = out_dir / p
    if not p.is_file():
        raise ConfigError(f"plot file not found: {path}")
    return p


def _data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ConfigError(f"cannot embed {path.name}: use a PNG, JPEG or GIF image")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _relative_link(path: Path, out_dir: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _md_table(header: list[str], rows: Iterable[list[str | None]]) -> list[str]:
    align = "l" + "r" * (len(header) - 1)
    return [*markdown_table(header, rows, align=align).split("\n"), ""]


def _markdown(
    title: str,
    version: str,
    run_info: list[tuple[str, str]],
    table: dict[str, Any],
    per_class: list[dict[str, Any]],
    cms: list[dict[str, Any]],
    notes: list[str],
    figures: list[dict[str, str]],
) -> str:
    lines = [f"# {title}", "", f"breastpath {version} evaluation report", ""]
    if run_info:
        lines += ["## Run", ""]
        lines += [f"- **{k}**: `{v}`" for k, v in run_info]
        lines.append("")
    if table["rows"]:
        lines += ["## Metrics", ""]
        lines += _md_table(
            ["Metric", *table["sections"]], [[label, *cells] for label, cells in table["rows"]]
        )
    for pc in per_class:
        lines += [f"### Per class: {pc['section']}", ""]
        lines += _md_table(pc["header"], pc["rows"])
    if cms:
        lines += ["## Confusion matrices", "", "Rows: true class; columns: predicted class.", ""]
        for cm in cms:
            lines += [f"### {cm['section']}", ""]
            lines += _md_table(["true \\ predicted", *cm["classes"]], cm["rows"])
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for fig in figures:
            lines += [f"![{fig['caption']}]({fig['link']})", "", f"*{fig['caption']}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, Mapping[str, Any]],
    plots: Mapping[str, str | os.PathLike[str]],
    run_info: Mapping[str, Any],
    notes: Iterable[str] = (),
) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing). Both files are written atomically.
    title : str
        Report title.
    metrics : dict of section -> metrics dict
        E.g. ``{"patch": binary_metrics(...), "patient": binary_metrics(...)}``; a section may
        also be a :func:`~breastpath.evaluate.metrics.multiclass_metrics` dict. Scalar metrics
        form one table (rows = metrics, columns = sections; "–" where a section lacks a metric
        or it is undefined); each ``confusion_matrix`` and ``per_class`` gets its own table.
    plots : dict of caption -> image path
        PNG/JPEG/GIF files, embedded in the HTML as base64 and linked by relative path from the
        Markdown. A relative path that does not exist from the working directory is looked up
        in ``out_dir``.
    run_info : dict
        Shown as a definition list, in order (model, checkpoint, data, split, threshold, ...).
        ``package_version`` is added unless a key already mentions a version. A
        ``class_names`` entry names the rows and columns of binary confusion matrices.
    notes : iterable of str
        Free-text notes, e.g. how patient scores were computed
        (:func:`~breastpath.evaluate.aggregate.describe_patient_score`).

    Returns
    -------
    (html_path, md_path) : tuple of Path

    Examples
    --------
    >>> m = {"patch": {"n": 4, "accuracy": 0.75, "confusion_matrix": [[1, 1], [0, 2]]}}
    >>> write_report("run/", title="IDC test", metrics=m, plots={},
    ...              run_info={"model": "cancernet"})  # doctest: +SKIP
    (PosixPath('run/report.html'), PosixPath('run/report.md'))
    """
    import jinja2

    from breastpath import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, section in metrics.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"metrics[{name!r}] must be a dict of metric values")
    info = dict(run_info)
    if not any("version" in str(k).lower() for k in info):
        info["package_version"] = __version__
    notes_list = [str(n) for n in notes]

    table = _metric_table(metrics)
    per_class = _per_class_tables(metrics)
    cms = _confusion_matrices(metrics, info)
    info_items = _run_info_items(info)
    figures = []
    for caption, path in plots.items():
        p = _resolve_plot(path, out)
        figures.append(
            {"caption": str(caption), "uri": _data_uri(p), "link": _relative_link(p, out)}
        )

    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    html = env.from_string(_HTML_TEMPLATE).render(
        title=title,
        version=__version__,
        run_info=info_items,
        table=table,
        per_class=per_class,
        cms=cms,
        notes=notes_list,
        figures=figures,
    )
    md = _markdown(title, __version__, info_items, table, per_class, cms, notes_list, figures)

    html_path, md_path = out / "report.html", out / "report.md"
    _write_atomic(html_path, html)
    _write_atomic(md_path, md)
    return html_path, md_path

"""Local copies of the CDN assets that Great Expectations' Data Docs load, for offline use.

GX 1.x Data Docs pages load scripts and styles from 16 CDN URLs (bootstrap, jQuery, popper,
bootstrap-table, bootstrap-datepicker, font-awesome, bootstrap-dark, vega, vega-lite,
vega-embed); with no internet the index renders empty and unstyled. The same files, taken from
the npm packages of those exact versions (vega/vega-lite/vega-embed: the newest 5.x/5.x/6.x, as
the CDN's ``@5``/``@6`` resolve), are vendored under ``plugins/static/gx/`` by
``scripts/vendor_gx_assets.py`` (which reads :data:`ASSETS`). The report server rewrites each
CDN URL of a Data Docs page to ``/mlplatform/static/gx/<file>`` as it serves the page
(:func:`localize`); GX's own files on disk stay as GX wrote them. Font Awesome's ``all.min.css``
finds its fonts at ``../webfonts/`` (woff2 only are vendored: every current browser takes those).
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
GX_DIR = STATIC / "gx"

#: CDN URL -> (npm package@version, file in the package, local path under plugins/static/gx/)
ASSETS: dict[str, tuple[str, str, str]] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": ("jquery@3.7.1", "dist/jquery.min.js", "js/jquery.min.js"),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": ("bootstrap@4.3.1", "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": ("bootstrap@4.3.1", "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": ("popper.js@1.12.9", "dist/umd/popper.min.js", "js/popper.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": ("bootstrap-table@1.19.1", "dist/bootstrap-table.min.css", "css/bootstrap-table.min.css"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": ("bootstrap-table@1.19.1", "dist/bootstrap-table.min.js", "js/bootstrap-table.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": ("bootstrap-table@1.19.1", "dist/extensions/filter-control/bootstrap-table-filter-control.min.js", "js/bootstrap-table-filter-control.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": ("bootstrap-table@1.19.0", "dist/extensions/filter-control/bootstrap-table-filter-control.css", "css/bootstrap-table-filter-control.css"),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": ("bootstrap-table@1.19.0", "dist/extensions/filter-control/bootstrap-table-filter-control.min.css", "css/bootstrap-table-filter-control.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": ("bootstrap-datepicker@1.9.0", "dist/css/bootstrap-datepicker.min.css", "css/bootstrap-datepicker.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": ("bootstrap-datepicker@1.9.0", "dist/js/bootstrap-datepicker.min.js", "js/bootstrap-datepicker.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": ("@fortawesome/fontawesome-free@6.6.0", "css/all.min.css", "css/all.min.css"),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": ("@forevolve/bootstrap-dark@1.1.0", "dist/css/bootstrap-prefers-dark.css", "css/bootstrap-prefers-dark.css"),
    "https://cdn.jsdelivr.net/npm/vega@5": ("vega@5.33.1", "build/vega.min.js", "js/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": ("vega-lite@5.23.0", "build/vega-lite.min.js", "js/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": ("vega-embed@6.29.0", "build/vega-embed.min.js", "js/vega-embed.min.js"),
}  # fmt: skip

#: Font Awesome's fonts, beside its stylesheet (``css/../webfonts/``)
WEBFONTS = ("fa-brands-400.woff2", "fa-regular-400.woff2", "fa-solid-900.woff2", "fa-v4compatibility.woff2")  # fmt: skip
FONT_PACKAGE = "@fortawesome/fontawesome-free@6.6.0"


def localize(html: str, static_url: str) -> str:
    """``html`` with every known CDN URL replaced by its local copy under ``static_url``."""
    for cdn, (_package, _file, local) in ASSETS.items():
        html = html.replace(f'"{cdn}"', f'"{static_url}/gx/{local}"')
    return html

"""The app's page: `page.html` (markup only), `app.js` and `app.css` — no external assets (it works offline, as the
hospital machines it is meant for) and no inline script or style (the Content-Security-Policy forbids both)."""

from importlib.resources import files

_HERE = files(__package__)
PAGE = _HERE.joinpath("page.html").read_text(encoding="utf-8")
ASSETS = {
    "app.js": (_HERE.joinpath("app.js").read_bytes(), "text/javascript; charset=utf-8"),
    "app.css": (_HERE.joinpath("app.css").read_bytes(), "text/css; charset=utf-8"),
}

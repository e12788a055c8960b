"""The app's one HTML page (`page.html`, no external assets: it works offline, as the hospital machines it is
meant for)."""

from importlib.resources import files

PAGE = files(__package__).joinpath("page.html").read_text(encoding="utf-8")

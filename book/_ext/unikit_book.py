"""A small Sphinx extension for the kit's book: every script once per page, and a set
colour mode (the theme logs an error for an unset one).

Jupyter Book reads the documents in more than one pass, and sphinx-thebe and
sphinx-togglebutton add their inline scripts on each pass, so a page declared
``const THEBE_JS_URL`` twice (a console error in every browser).
"""


def _dedup_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for js in context.get("script_files", []):
        name = getattr(js, "filename", js) or ""  # inline scripts come as '' or None
        key = (str(name), tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"] = scripts
    context["default_mode"] = context.get("default_mode") or "light"  # pydata-sphinx-theme reads it


def setup(app):
    app.connect("html-page-context", _dedup_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

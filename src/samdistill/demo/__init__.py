"""``samdistill demo``: a local web page that puts teacher and students side by side on your images.

``service.py`` holds the request handlers (no web framework), ``server.py`` the FastAPI app, and
``static/`` the page (plain HTML + JS, a canvas to draw boxes and points on).
"""

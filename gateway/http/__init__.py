"""The only package (with app.py) that touches aiohttp.web: thin handlers and middlewares."""

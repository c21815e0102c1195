"""The page groups of the site, one module each (see web_stub.app.create_app)."""

"""The credential core shared by the phone line and the web login.

Knows nothing of AGI, HTTP or asyncio: SQLAlchemy models, plain functions, and pure decisions.
"""

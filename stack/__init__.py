"""The composition root: the one settings object, the processes, the `ivr` command.

The only package that imports the voice (`ivr`), the web (`web_stub`) and the notices (`notices`)
together; each of those builds on `core` and its own settings section (docs/architecture.md).
"""

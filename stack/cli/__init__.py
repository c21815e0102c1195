"""The ``ivr`` command: one module per subcommand group, each with ``register(subparsers)``."""

"""The subcommands of ``affectflow``, one module per command family."""

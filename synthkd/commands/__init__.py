"""Subcommand groups of the ``synthkd`` CLI, one module each, plus the options they share."""

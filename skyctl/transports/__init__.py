"""Transports: how a command is started on a host (``local`` child process, ``ssh`` exec channel)."""

"""Transports: how a command is started on a host (``local`` child process, ``command``
program, ``ssh`` exec channel, ``reuse`` kept SSH connection), one module or package per
host type. ``hosttypes.make_transport`` picks one for a profile; each module is imported
only when used (a warm call's start)."""

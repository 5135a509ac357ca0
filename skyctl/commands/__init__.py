"""What runs a ``skyctl`` command, apart from ``cli.py`` (which parses and delegates).

``state`` (this command's time limits, report account, SIGTERM), ``stdout`` (the
reader of stdout leaving), ``one`` (a call on one host), ``group`` (what a broadcast
and a distributed pipe share), ``broadcast`` (``run`` on a group), ``pipe_input``
(``pipe``'s stdin options), ``distribute`` (``pipe`` on a group, ``--joblog``),
``check`` (``skyctl check``), ``listing`` (``skyctl hosts``).
"""

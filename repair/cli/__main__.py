"""``python -m repair.cli``: the same commands as ``tmlrepair`` and ``python -m repair``."""

from . import main

main()

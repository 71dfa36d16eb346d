"""``python -m medart.cli``: the ``medart`` command."""

from medart.cli import main

main()

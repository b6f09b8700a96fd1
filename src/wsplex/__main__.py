"""``python -m wsplex``: the same as the ``wsplex`` command."""

from wsplex.cli import main

if __name__ == "__main__":
    main()

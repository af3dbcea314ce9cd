"""``python -m mediastream`` is the ``mediastream`` command."""

from __future__ import annotations

from mediastream.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

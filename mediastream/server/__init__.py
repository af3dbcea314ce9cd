"""The asyncio server: the only place mediastream does I/O."""

from __future__ import annotations

"""Sans-I/O provider protocols: messages in, events out; commands in, messages out."""

from __future__ import annotations

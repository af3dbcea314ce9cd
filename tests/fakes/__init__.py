"""Faithful local stand-ins for the providers' REST APIs (see providers.py)."""

"""MQL arrays operators (to be filled)."""

"""MQL boolean operators (to be filled)."""

"""MQL dates operators (to be filled)."""

"""MQL types operators (to be filled)."""

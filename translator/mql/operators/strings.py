"""MQL strings operators (to be filled)."""

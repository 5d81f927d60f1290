"""The MQL expression and query engines: compile once into closures, evaluate per document."""

"""Data only: the models every layer shares; imports nothing from the project but errors."""

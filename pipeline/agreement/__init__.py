"""Agreement statistics as pure functions of arrays; imports nothing from the project."""

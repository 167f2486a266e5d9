"""OpenGait's model zoo in our code: one module per architecture, shared pieces in `parts.py`."""

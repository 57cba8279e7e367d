"""synthkd: black-box knowledge distillation from OpenAI-compatible teachers to small local students."""

__version__ = "0.1.0"

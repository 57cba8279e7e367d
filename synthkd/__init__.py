"""synthkd: black-box knowledge distillation from OpenAI-compatible teachers to small local students."""

import logging as _logging

__version__ = "0.1.0"

# library use prints nothing: messages reach only the handlers the application configures (synthkd.log)
_logging.getLogger("synthkd").addHandler(_logging.NullHandler())

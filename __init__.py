"""g8os: core0, the PID-1 init of a container node administered over Redis.

Layers (each imports only those to its left): messages < system < fs < actors < boot;
client imports messages only.
"""

__version__ = "0.1.0"

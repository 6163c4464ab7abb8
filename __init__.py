"""hermes-sim: trace-replay and calibration pipeline for multi-stage LLM inference.

Data flows one way: ingest -> warehouse -> calibrate -> replay; pipelines/ holds the CLI.
"""

__version__ = "0.1.0"

"""hermes-sim: trace-replay and calibration pipeline for multi-stage LLM inference.

Data flows one way: ingest -> warehouse -> calibrate -> replay; pipelines/ holds the CLI. The Python API for
notebooks and scripts is `hermes_sim.api` (`from hermes_sim.api import ingest, calibrate, replay`).
"""

__version__ = "0.1.0"

"""Inference: backends, the engine that schedules and cancels generations, and the model store."""

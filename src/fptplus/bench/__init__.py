"""Measurements: peak training memory per method (meta accounting or CUDA), throughput, reports."""

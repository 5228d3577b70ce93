"""The speed analysis behind ``speed_benchmark.py`` (not needed to train, test or deploy).

Random encoders of the paper's shapes, synthetic utterances, the reference workloads
(GEMM limits, bare Hugging Face forwards), the recipe's overheads and the report.
"""

"""Hand-built reference paths: each mode's pod path built with iproute2 alone.

``spec`` says which reference a mode has (pure), ``build`` makes it in
throwaway namespaces with pyroute2, ``rounds`` measures contenders in
interleaved rounds. Shared by the throughput suite and ``bench/bench_handbuilt.py``
(docs/throughput.md, ADR 0007).
"""
